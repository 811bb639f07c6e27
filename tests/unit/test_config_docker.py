"""``[docker]`` and ``[vtep] state`` in the config (DESIGN.md §4)."""

from __future__ import annotations

import pytest

from dataplane.config import parse_config
from dataplane.errors import ConfigError

BASE = '[vtep]\nlocal = "198.18.0.1"\nname = "h1"\n'


def test_docker_defaults_and_no_network_needed() -> None:
    c = parse_config(BASE + "[docker]\n")
    assert c.networks == ()
    assert c.docker is not None and c.docker.plugin == "vxdp"
    assert c.docker.socket == "/run/docker/plugins/vxdp.sock"
    assert c.vtep.state == "/var/lib/vxdp/h1.json"
    c = parse_config(BASE + 'state = "/tmp/s.json"\n[docker]\nplugin = "vx2"\n')
    assert c.docker is not None and c.docker.socket == "/run/docker/plugins/vx2.sock"
    assert c.vtep.state == "/tmp/s.json"
    c = parse_config(BASE + '[docker]\nsocket = "/run/x/p.sock"\n')
    assert c.docker is not None and c.docker.socket == "/run/x/p.sock"


@pytest.mark.parametrize("text, key, msg", [
    (BASE, "network", "unless [docker]"),
    (BASE + '[docker]\nplugin = "a b"\n', "docker.plugin", "not a valid plugin name"),
    (BASE + '[docker]\nsocket = "rel.sock"\n', "docker.socket", "absolute"),
    (BASE + '[docker]\nsocket = "/' + "x" * 120 + '"\n', "docker.socket", "too long"),
    (BASE + '[docker]\nstate = "/x"\n', "docker.state", "unknown key"),
    (BASE + 'state = 3\n[docker]\n', "vtep.state", "must be a string"),
    (BASE + '[docker]\nplugn = "x"\n', "docker.plugn", 'did you mean "plugin"'),
])
def test_docker_errors(text: str, key: str, msg: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.toml")
    assert err.value.key == key and msg in str(err.value)
