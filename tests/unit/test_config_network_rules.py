"""The per-network keys of the outer header rules (``ttl``, ``tos``, ``df``) and the learning
bounds (``max_learned``, ``max_learned_per_port``): defaults, accepted values, one keyed error
line for each wrong one."""

from __future__ import annotations

import pytest

from dataplane.config import parse_config
from dataplane.errors import ConfigError

BASE = '[vtep]\nlocal = "198.18.0.1"\n[[network]]\nname = "n"\nvni = 4097\n'


def net(extra: str = "") -> object:
    return parse_config(BASE + extra, "x.toml").networks[0]


def test_defaults_are_the_kernels() -> None:
    n = net()
    assert (n.ttl, n.tos, n.df) == ("auto", 0, "unset")            # type: ignore[attr-defined]
    assert (n.max_learned, n.max_learned_per_port) == (16384, 1024)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "field", "value"), [
    ('ttl = "inherit"', "ttl", "inherit"), ("ttl = 1", "ttl", 1), ("ttl = 255", "ttl", 255),
    ('ttl = "auto"', "ttl", "auto"), ('tos = "inherit"', "tos", "inherit"),
    ("tos = 184", "tos", 184), ('df = "set"', "df", "set"), ('df = "inherit"', "df", "inherit"),
    ("max_learned = 0", "max_learned", 0), ("max_learned_per_port = 8", "max_learned_per_port", 8),
])
def test_accepted(text: str, field: str, value: object) -> None:
    assert getattr(net(text + "\n"), field) == value


@pytest.mark.parametrize(("text", "message"), [
    ("ttl = 0", "x.toml:6: network[0].ttl: 0 is out of range"),
    ("ttl = 256", "network[0].ttl: 256 is out of range"),
    ('ttl = "always"', 'network[0].ttl: "always" is not "auto", "inherit" or 1..255'),
    ("ttl = true", "network[0].ttl: must be an integer or a string, not a boolean"),
    ("tos = 256", "network[0].tos: 256 is out of range"),
    ("tos = -1", "network[0].tos: -1 is out of range"),
    ('tos = "copy"', 'network[0].tos: "copy" is not "inherit" or 0..255'),
    ('df = "maybe"', 'network[0].df: "maybe" is not "unset", "set" or "inherit"'),
    ("df = 1", "network[0].df: must be a string"),
    ("max_learned = -1", "network[0].max_learned"),
])
def test_refused_with_one_keyed_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        net(text + "\n")
    assert message in str(e.value) and "\n" not in str(e.value)
