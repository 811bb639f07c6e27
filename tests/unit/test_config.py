"""dataplane.config: the TOML contract of DESIGN.md §4 and its one-line, line-numbered errors."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from dataplane.validate import Locals
from dataplane.config import (
    OFFLOADS,
    Config,
    EndpointConfig,
    StoreConfig,
    VtepConfig,
    endpoint_from_args,
    load_config,
    parse_config,
)
from dataplane.errors import ConfigError, VxdpError

# The DESIGN.md §4 example, verbatim apart from the second endpoint/peer added for coverage.
GOOD = """\
[vtep]
name = "manager"                  # default "vxdp"; control socket defaults to /run/vxdp/<name>.sock
local = "198.18.0.1"              # underlay address to bind
port = 4789                       # optional
control = "/run/vxdp/manager.sock" # optional
allow = ["198.18.0.0/24"]         # optional: accept VXLAN only from these sources

[[network]]
name = "mynet"
vni = 4097
mtu = 1450                        # endpoint MTU; default 1450 (1500 - 50)
proxy = true                      # ARP proxy (default true)
learning = false                  # learn remote MACs from received packets (default false)
flood = ["198.18.0.2"]            # optional head-end replication list

[[network.endpoint]]
name = "c1"                       # TAP name on the host (<= 15 chars)
mac = "02:42:c0:a8:37:04"
address = "192.168.55.4/24"
netns = "c1"                      # optional: move into this named netns (ip netns add)...
ifname = "eth0"                   # ...under this name

[[network.endpoint]]
name = "c2"
mac = "02:42:C0:A8:37:05"
address = "192.168.55.5/24"

[[network.peer]]
mac = "02:42:c0:a8:37:03"
address = "192.168.55.3"
vtep = "198.18.0.2"
"""

MINIMAL = """\
[vtep]
local = "198.18.0.1"

[[network]]
name = "mynet"
vni = 4097
"""


def error_of(text: str, path: str = "cfg.toml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    err = info.value
    assert "\n" not in str(err)
    assert isinstance(err, VxdpError)
    return err


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line number of the nth line containing needle."""
    seen = 0
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == nth:
                return number
    raise AssertionError(f"{needle!r} not in text")


# ------------------------------------------------------------------------------------------
# Good configs
# ------------------------------------------------------------------------------------------


def test_design_example_parses() -> None:
    cfg = parse_config(GOOD, "manager.toml")
    assert isinstance(cfg, Config)
    assert cfg.path == "manager.toml"
    v = cfg.vtep
    assert v == VtepConfig(name="manager", local=Locals(IPv4Address("198.18.0.1"), None),
                           port=4789,
                           control="/run/vxdp/manager.sock",
                           allow=(IPv4Network("198.18.0.0/24"),))
    assert v.src_port_range == (49152, 65535) and v.strict is True
    assert v.metrics is None and v.burst == 64
    assert v.offload == frozenset({"tap", "udp_gso", "udp_gro"}) == OFFLOADS
    (net,) = cfg.networks
    assert (net.name, net.vni, net.mtu, net.proxy, net.learning) == ("mynet", 4097, 1450, True,
                                                                      False)
    assert net.ageing == 300.0 and net.maxaddress == 0
    assert net.flood == (IPv4Address("198.18.0.2"),)
    assert net.endpoints[0] == EndpointConfig("c1", "02:42:c0:a8:37:04",
                                              IPv4Interface("192.168.55.4/24"), "c1", "eth0")
    # MACs are normalised to lower case
    assert net.endpoints[1].mac == "02:42:c0:a8:37:05"
    assert net.endpoints[1].netns is None and net.endpoints[1].ifname is None
    (peer,) = net.peers
    assert peer.mac == "02:42:c0:a8:37:03"
    assert peer.address == IPv4Address("192.168.55.3")
    assert peer.vtep == IPv4Address("198.18.0.2")
    assert cfg.store is None
    assert cfg.network("mynet") is net and cfg.network_by_vni(4097) is net
    assert cfg.network("nope") is None


def test_minimal_defaults() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.path is None
    assert cfg.vtep.name == "vxdp"
    assert cfg.vtep.control == "/run/vxdp/vxdp.sock"
    assert cfg.vtep.port == 4789 and cfg.vtep.allow == ()
    net = cfg.networks[0]
    assert (net.mtu, net.proxy, net.learning, net.flood, net.endpoints, net.peers) == \
        (1450, True, False, (), (), ())


def test_control_defaults_to_vtep_name() -> None:
    cfg = parse_config(MINIMAL.replace("[vtep]\n", '[vtep]\nname = "worker1"\n'))
    assert cfg.vtep.control == "/run/vxdp/worker1.sock"


def test_extra_keys() -> None:
    text = MINIMAL.replace('local = "198.18.0.1"\n', """local = "198.18.0.1"
src_port_range = [50000, 50010]
strict = false
metrics = "127.0.0.1:9477"
burst = 128
""") + "ageing = 12.5\nmaxaddress = 100\n" + """
[store]
etcd = ["http://198.18.0.100:2379", "http://198.18.0.101:2379/"]
"""
    cfg = parse_config(text)
    assert cfg.vtep.src_port_range == (50000, 50010)
    assert cfg.vtep.strict is False
    assert cfg.vtep.metrics == "127.0.0.1:9477"
    assert cfg.vtep.burst == 128
    assert cfg.networks[0].ageing == 12.5 and cfg.networks[0].maxaddress == 100
    assert cfg.store == StoreConfig(etcd=("http://198.18.0.100:2379",
                                          "http://198.18.0.101:2379"), prefix="/vxdp", ttl=10)


def test_store_options() -> None:
    cfg = parse_config(MINIMAL + '[store]\netcd = ["http://e:2379"]\nprefix = "/x/"\nttl = 3\n')
    assert cfg.store == StoreConfig(etcd=("http://e:2379",), prefix="/x", ttl=3)


def test_ageing_int_becomes_float() -> None:
    cfg = parse_config(MINIMAL + "ageing = 30\n")
    assert cfg.networks[0].ageing == 30.0 and isinstance(cfg.networks[0].ageing, float)


def test_allow_plain_address_is_a_host_network() -> None:
    cfg = parse_config(MINIMAL.replace('local = "198.18.0.1"',
                                       'local = "198.18.0.1"\nallow = ["198.18.0.7"]'))
    assert cfg.vtep.allow == (IPv4Network("198.18.0.7/32"),)


def test_netns_without_ifname_is_ok() -> None:
    text = MINIMAL + '[[network.endpoint]]\nname = "c1"\nmac = "02:00:00:00:00:01"\n' \
                     'address = "10.0.0.1/24"\nnetns = "ns1"\n'
    ep = parse_config(text).networks[0].endpoints[0]
    assert ep.netns == "ns1" and ep.ifname is None


def test_configs_are_frozen() -> None:
    cfg = parse_config(GOOD)
    with pytest.raises(AttributeError):
        cfg.vtep.port = 1  # type: ignore[misc]


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(GOOD)
    cfg = load_config(str(path))
    assert cfg.path == str(path) and cfg.vtep.name == "manager"


# ------------------------------------------------------------------------------------------
# Errors: each names the key and, where it can, the line
# ------------------------------------------------------------------------------------------


def test_bad_endpoint_mac_example_message() -> None:
    text = GOOD.replace("02:42:C0:A8:37:05", "02:42:zz")
    err = error_of(text)
    assert str(err) == (f"cfg.toml:{line_of(text, '02:42:zz')}: network[0].endpoint[1].mac: "
                        '"02:42:zz" is not a MAC address (expected aa:bb:cc:dd:ee:ff)')
    assert err.key == "network[0].endpoint[1].mac"
    assert err.line == line_of(text, "02:42:zz")
    assert err.path == "cfg.toml"


# (replace this, with that, expected key, line needle, words in the message)
BAD_VALUES = [
    ('local = "198.18.0.1"', 'local = "198.18.0"', "vtep.local", 'local = "198.18.0"',
     "not an IPv4 address"),
    ('local = "198.18.0.1"', 'local = "fe80::1"', "vtep.local", "fe80::1", "link-local"),
    ('local = "198.18.0.1"', 'local = ["198.18.0.1", "198.18.0.9"]', "vtep.local",
     "198.18.0.1", "two IPv4 addresses"),
    ('local = "198.18.0.1"', 'local = []', "vtep.local", "local = []", "empty list"),
    ('local = "198.18.0.1"', 'local = "ff02::1"', "vtep.local", "ff02::1",
     "not a unicast address"),
    ('local = "198.18.0.1"', 'local = "2001:db8::1"', "network[0].flood[0]", "flood =",
     "[vtep] local has no IPv4 address"),
    ('local = "198.18.0.1"', "local = 1", "vtep.local", "local = 1", "must be a string"),
    ("port = 4789", "port = 0", "vtep.port", "port = 0", "1..65535"),
    ("port = 4789", "port = 70000", "vtep.port", "port = 70000", "1..65535"),
    ("port = 4789", 'port = "4789"', "vtep.port", 'port = "4789"', "must be an integer"),
    ("port = 4789", "port = true", "vtep.port", "port = true", "not a boolean"),
    ('allow = ["198.18.0.0/24"]', 'allow = ["198.18.0.1/24"]', "vtep.allow[0]", "allow =",
     'host bits set (did you mean "198.18.0.0/24"?)'),
    ('allow = ["198.18.0.0/24"]', 'allow = ["nonsense"]', "vtep.allow[0]", "allow =",
     "not an IPv4 or IPv6 network"),
    ('allow = ["198.18.0.0/24"]', 'allow = "198.18.0.0/24"', "vtep.allow", "allow =",
     "must be an array"),
    ('name = "manager"', 'name = "a/b"', "vtep.name", 'name = "a/b"', "not a valid VTEP name"),
    ("vni = 4097", "vni = 0", "network[0].vni", "vni = 0", "1..16777215"),
    ("vni = 4097", "vni = 16777216", "network[0].vni", "vni = 16777216", "1..16777215"),
    ("vni = 4097", 'vni = "4097"', "network[0].vni", 'vni = "4097"', "must be an integer"),
    ("mtu = 1450", "mtu = 67", "network[0].mtu", "mtu = 67", "68..9000"),
    ("mtu = 1450", "mtu = 9001", "network[0].mtu", "mtu = 9001", "68..9000"),
    ("proxy = true", 'proxy = "yes"', "network[0].proxy", 'proxy = "yes"', "must be a boolean"),
    ("learning = false", "learning = 1", "network[0].learning", "learning = 1",
     "must be a boolean"),
    ('flood = ["198.18.0.2"]', 'flood = ["198.18.0.2", "198.18.0.x"]', "network[0].flood[1]",
     "flood =", "not an IPv4 address"),
    ('flood = ["198.18.0.2"]', 'flood = ["198.18.0.2", "198.18.0.2"]', "network[0].flood[1]",
     "flood =", "listed twice"),
    ('flood = ["198.18.0.2"]', 'flood = ["fe80::1"]', "network[0].flood[0]", "flood =",
     "link-local"),
    ('flood = ["198.18.0.2"]', 'flood = ["2001:db8::2"]', "network[0].flood[0]", "flood =",
     "[vtep] local has no IPv6 address"),
    ('flood = ["198.18.0.2"]', 'flood = ["198.18.0.1"]', "network[0].flood[0]", "flood =",
     "own local address"),
    ('name = "c1"', 'name = "c1-very-long-name"', "network[0].endpoint[0].name",
     "c1-very-long-name", "too long"),
    ('name = "c1"', 'name = "c 1"', "network[0].endpoint[0].name", 'name = "c 1"',
     "not a valid interface name"),
    ('name = "c1"', 'name = "c:1"', "network[0].endpoint[0].name", 'name = "c:1"',
     "not a valid interface name"),
    ('name = "c1"', 'name = ""', "network[0].endpoint[0].name", 'name = ""', "cannot be empty"),
    ('ifname = "eth0"', 'ifname = "e/0"', "network[0].endpoint[0].ifname", "e/0",
     "not a valid interface name"),
    ('"02:42:c0:a8:37:04"', '"03:42:c0:a8:37:04"', "network[0].endpoint[0].mac",
     "03:42:c0:a8:37:04", "multicast"),
    ('"02:42:c0:a8:37:04"', '"00:00:00:00:00:00"', "network[0].endpoint[0].mac",
     "00:00:00:00:00:00", "all-zeros"),
    ('address = "192.168.55.4/24"', 'address = "192.168.55.4"',
     "network[0].endpoint[0].address", 'address = "192.168.55.4"', "needs a prefix length"),
    ('address = "192.168.55.4/24"', 'address = "192.168.55.400/24"',
     "network[0].endpoint[0].address", "192.168.55.400", "not an IPv4 or IPv6 address with"),
    ('"02:42:c0:a8:37:03"', '"01:00:5e:00:00:01"', "network[0].peer[0].mac",
     "01:00:5e:00:00:01", "multicast"),
    ('address = "192.168.55.3"', 'address = "192.168.55.3/24"', "network[0].peer[0].address",
     "192.168.55.3/24", "without a prefix length"),
    ('vtep = "198.18.0.2"', 'vtep = "198.18.0.1"', "network[0].peer[0].vtep",
     'vtep = "198.18.0.1"', "own local address"),
    ('vtep = "198.18.0.2"', 'vtep = "::2"', "network[0].peer[0].vtep", 'vtep = "::2"',
     "[vtep] local has no IPv6 address"),
    ('vtep = "198.18.0.2"', 'vtep = "fe80::2"', "network[0].peer[0].vtep", 'vtep = "fe80::2"',
     "link-local"),
    ("learning = false", 'learning = false\nflowlabel = 1048576', "network[0].flowlabel",
     "flowlabel = 1048576", "out of range"),
    ("learning = false", 'learning = false\nflowlabel = "auto"', "network[0].flowlabel",
     'flowlabel = "auto"', "is not \"inherit\""),
]


@pytest.mark.parametrize(("old", "new", "key", "needle", "words"), BAD_VALUES,
                         ids=[f"{b[2]}={b[1]}" for b in BAD_VALUES])
def test_bad_values(old: str, new: str, key: str, needle: str, words: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    err = error_of(text)
    assert err.key == key
    assert err.line == line_of(text, needle), str(err)
    assert str(err).startswith(f"cfg.toml:{err.line}: {key}: ")
    assert words in str(err)


def test_missing_required_keys_point_at_their_table() -> None:
    for key, table_header, nth in (("local", "[vtep]", 1), ("vni", "[[network]]", 1),
                                   ("mac", "[[network.endpoint]]", 2),
                                   ("address", "[[network.peer]]", 1)):
        lines = GOOD.splitlines(keepends=True)
        start = line_of(GOOD, table_header, nth) - 1
        # drop the first `key = ...` line after that header
        for i in range(start, len(lines)):
            if lines[i].startswith(f"{key} ="):
                del lines[i]
                break
        text = "".join(lines)
        err = error_of(text)
        assert err.key is not None and err.key.endswith(key)
        assert "missing required key" in str(err)
        assert err.line == line_of(text, table_header, nth)


def test_missing_vtep_and_networks() -> None:
    assert "[vtep]" in str(error_of('[[network]]\nname = "a"\nvni = 1\n'))
    err = error_of('[vtep]\nlocal = "198.18.0.1"\n')
    assert err.key == "network" and "at least one" in str(err)


def test_unknown_key_suggestion() -> None:
    text = GOOD.replace("learning = false", "learnig = false")
    err = error_of(text)
    assert err.key == "network[0].learnig"
    assert err.line == line_of(text, "learnig")
    assert 'unknown key (did you mean "learning"?)' in str(err)


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    err = error_of(MINIMAL.replace("[vtep]\n", "[vtep]\nzzz = 1\n"))
    assert err.key == "vtep.zzz" and err.line == 2
    assert "known keys: name, local, port" in str(err)


def test_unknown_table_suggestion() -> None:
    text = GOOD.replace("[[network.peer]]", "[[network.peers]]")
    err = error_of(text)
    assert err.key == "network[0].peers"
    assert err.line == line_of(text, "[[network.peers]]")
    assert 'did you mean "peer"?' in str(err)
    err = error_of(GOOD.replace("[vtep]", "[vtpe]"))
    assert err.key == "vtpe" and err.line == 1 and 'did you mean "vtep"' in str(err)


def test_single_bracket_network_is_explained() -> None:
    err = error_of(MINIMAL.replace("[[network]]", "[network]"))
    assert "write [[network]], not [network]" in str(err)
    err = error_of(GOOD.replace("[[network.peer]]", "[network.peer]"))
    assert "[[network.peer]]" in str(err) and err.key == "network[0].peer"


def test_ifname_without_netns() -> None:
    text = GOOD.replace('netns = "c1"                      # optional: move into this named '
                        "netns (ip netns add)...\n", "")
    err = error_of(text)
    assert err.key == "network[0].endpoint[0].ifname"
    assert err.line == line_of(text, 'ifname = "eth0"')
    assert "needs netns" in str(err)


def test_duplicates() -> None:
    # endpoint names are unique across the whole file (they are host interface names)
    two_nets = GOOD + """
[[network]]
name = "other"
vni = 4098

[[network.endpoint]]
name = "c2"
mac = "02:00:00:00:00:09"
address = "10.0.0.2/24"
"""
    err = error_of(two_nets)
    assert err.key == "network[1].endpoint[0].name"
    assert err.line == line_of(two_nets, 'name = "c2"', 2)
    assert 'duplicate endpoint name "c2" (also network[0].endpoint[1])' in str(err)

    err = error_of(two_nets.replace('name = "other"', 'name = "mynet"'))
    assert err.key == "network[1].name" and "duplicate network name" in str(err)

    err = error_of(two_nets.replace("vni = 4098", "vni = 4097"))
    assert err.key == "network[1].vni" and "duplicate VNI 4097" in str(err)

    # MACs within one network: endpoints and peers share the FDB
    text = GOOD.replace('"02:42:c0:a8:37:03"', '"02:42:c0:a8:37:04"')
    err = error_of(text)
    assert err.key == "network[0].peer[0].mac" and "duplicate MAC" in str(err)
    assert err.line == line_of(text, '"02:42:c0:a8:37:04"', 2)

    # ...and so do the overlay addresses (the ARP proxy answers one MAC per IP)
    err = error_of(GOOD.replace('"192.168.55.5/24"', '"192.168.55.4/24"'))
    assert err.key == "network[0].endpoint[1].address" and "duplicate address" in str(err)

    # the same MAC in two different networks is fine
    parse_config(two_nets.replace('name = "c2"\nmac = "02:00:00:00:00:09"',
                                  'name = "c9"\nmac = "02:42:c0:a8:37:04"'))


def test_store_errors() -> None:
    err = error_of(MINIMAL + "[store]\nprefix = \"/x\"\n")
    assert err.key == "store.etcd" and "missing required key" in str(err)
    err = error_of(MINIMAL + '[store]\netcd = ["ftp://x"]\n')
    assert err.key == "store.etcd[0]" and "not an http URL" in str(err)
    err = error_of(MINIMAL + '[store]\netcd = []\n')
    assert err.key == "store.etcd"
    err = error_of(MINIMAL + '[store]\netcd = ["http://e:2379"]\nttl = 0\n')
    assert err.key == "store.ttl" and err.line == line_of(MINIMAL, "vni") + 3
    err = error_of(MINIMAL + '[store]\netcd = ["http://e:2379"]\nprefix = "x"\n')
    assert err.key == "store.prefix"


def test_extra_key_errors() -> None:
    def with_vtep(extra: str) -> str:
        return MINIMAL.replace("[vtep]\n", f"[vtep]\n{extra}\n")

    assert error_of(with_vtep("src_port_range = [2, 1]")).key == "vtep.src_port_range"
    assert "two integers" in str(error_of(with_vtep("src_port_range = [1]")))
    assert "1..65535" in str(error_of(with_vtep("src_port_range = [0, 10]")))
    assert error_of(with_vtep('metrics = "nope"')).key == "vtep.metrics"
    assert error_of(with_vtep("burst = 0")).key == "vtep.burst"
    assert error_of(with_vtep("burst = 1025")).key == "vtep.burst"
    assert error_of(with_vtep("strict = 1")).key == "vtep.strict"
    assert error_of(MINIMAL + "ageing = 0\n").key == "network[0].ageing"
    assert error_of(MINIMAL + "ageing = -1.5\n").key == "network[0].ageing"
    assert error_of(MINIMAL + "ageing = nan\n").key == "network[0].ageing"
    assert error_of(MINIMAL + "maxaddress = -1\n").key == "network[0].maxaddress"
    long_path = "/run/" + "x" * 120 + ".sock"
    assert "too long" in str(error_of(with_vtep(f'control = "{long_path}"')))


@pytest.mark.parametrize(("value", "expected"), [
    ("true", OFFLOADS),
    ("false", frozenset()),
    ("[]", frozenset()),
    ('["tap"]', frozenset({"tap"})),
    ('["udp_gro", "udp_gso"]', frozenset({"udp_gso", "udp_gro"})),
    ('["tap", "udp_gso", "udp_gro"]', OFFLOADS),
])
def test_offload_values(value: str, expected: frozenset[str]) -> None:
    cfg = parse_config(MINIMAL.replace("[vtep]\n", f"[vtep]\noffload = {value}\n"))
    assert cfg.vtep.offload == expected
    assert isinstance(cfg.vtep.offload, frozenset)
    assert parse_config(MINIMAL).vtep.offload == OFFLOADS  # default: all, each still probed


@pytest.mark.parametrize(("value", "key", "words"), [
    ('"tap"', "vtep.offload", 'must be true, false or an array of names from tap, udp_gro, '
                              'udp_gso, not a string ("tap")'),
    ("1", "vtep.offload", "must be true, false or an array"),
    ('["tso"]', "vtep.offload[0]", '"tso" is not an offload (known: tap, udp_gro, udp_gso)'),
    ('["tap", "udp-gso"]', "vtep.offload[1]", '"udp-gso" is not an offload '
                                              '(did you mean "udp_gso"?)'),
    ('["tap", true]', "vtep.offload[1]", "true is not an offload name"),
    ('["tap", "tap"]', "vtep.offload[1]", '"tap" is listed twice'),
])
def test_offload_errors(value: str, key: str, words: str) -> None:
    text = MINIMAL.replace("[vtep]\n", f"[vtep]\noffload = {value}\n")
    err = error_of(text)
    assert err.key == key
    assert err.line == line_of(text, "offload =")
    assert str(err).startswith(f"cfg.toml:{err.line}: {key}: ")
    assert words in str(err), str(err)


def test_busy_poll() -> None:
    assert parse_config(MINIMAL).vtep.busy_poll == 0      # off unless asked for
    cfg = parse_config(MINIMAL.replace("[vtep]\n", "[vtep]\nbusy_poll = 250\n"))
    assert cfg.vtep.busy_poll == 250
    for bad, words in (("-1", "-1 is out of range (must be 0..100000 microseconds)"),
                       ("100001", "out of range"), ('"50us"', "must be an integer")):
        text = MINIMAL.replace("[vtep]\n", f"[vtep]\nbusy_poll = {bad}\n")
        err = error_of(text)
        assert err.key == "vtep.busy_poll" and err.line == line_of(text, "busy_poll =")
        assert words in str(err), str(err)


def test_top_level_unknown_key() -> None:
    err = error_of('netwrok = 1\n' + MINIMAL)
    assert err.key == "netwrok" and err.line == 1 and 'did you mean "network"' in str(err)


def test_toml_syntax_error_format() -> None:
    err = error_of('[vtep]\nlocal = "198.18.0.1\n')
    assert str(err).startswith("cfg.toml:2: TOML syntax error: ")
    assert "column" in str(err) and "(at line" not in str(err)
    err = error_of("[vtep]\nlocal = \n")
    assert str(err).startswith("cfg.toml:2: TOML syntax error: ")
    err = error_of("[vtep\n")
    assert str(err).startswith("cfg.toml:1: TOML syntax error: ")


def test_load_config_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert str(info.value) == f"cannot read {missing}: No such file or directory"
    with pytest.raises(ConfigError, match="cannot read .*: Is a directory"):
        load_config(str(tmp_path))
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'[vtep]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match=r"bin.toml:2: not valid UTF-8"):
        load_config(str(binary))
    if os.geteuid() != 0:  # root reads anything
        secret = tmp_path / "secret.toml"
        secret.write_text(MINIMAL)
        secret.chmod(0)
        with pytest.raises(ConfigError, match="cannot read .*Permission denied"):
            load_config(str(secret))


def test_load_config_reports_file_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.replace("vni = 4097", "vni = -4"))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith(f"{path}:6: network[0].vni: ")


def test_locator_ignores_headers_inside_multiline_strings() -> None:
    # A multi-line string whose text looks like a table header must not shift the count.
    text = MINIMAL.replace('local = "198.18.0.1"', 'local = "198.18.0.1"\nmetrics = """\n'
                           '[[network]]\n"""')
    err = error_of(text)
    assert err.key == "vtep.metrics"
    err = error_of(MINIMAL.replace('local = "198.18.0.1"', 'local = "198.18.0.1"\n'
                                   'control = """\n[[network]]\n"""\nportt = 1'))
    assert err.key == "vtep.portt" and err.line == 6


# ------------------------------------------------------------------------------------------
# endpoint_from_args (vxdp endpoint add)
# ------------------------------------------------------------------------------------------


def test_endpoint_from_args() -> None:
    ep = endpoint_from_args("mynet", "c3", "02:42:C0:A8:37:06", "192.168.55.6/24", "c3", "eth0")
    assert ep == EndpointConfig("c3", "02:42:c0:a8:37:06", IPv4Interface("192.168.55.6/24"),
                                "c3", "eth0")
    assert endpoint_from_args("mynet", "c3", "02:00:00:00:00:01", "10.0.0.1/8").netns is None


@pytest.mark.parametrize(("kwargs", "option", "words"), [
    ({"mac": "zz"}, "--mac", "not a MAC address"),
    ({"mac": "ff:ff:ff:ff:ff:ff"}, "--mac", "multicast"),
    ({"address": "10.0.0.1"}, "--address", "prefix length"),
    ({"address": "fe80::1/64"}, "--address", "link-local"),
    ({"address": ["10.0.0.1/24", "10.0.0.1/24"]}, "--address", "listed twice"),
    ({"name": "x" * 16}, "--name", "too long"),
    ({"network": ""}, "--network", "not a network name"),
    ({"netns": "a/b"}, "--netns", "not a valid network namespace name"),
])
def test_endpoint_from_args_errors(kwargs: dict[str, str], option: str, words: str) -> None:
    args = {"network": "mynet", "name": "c3", "mac": "02:00:00:00:00:01",
            "address": "10.0.0.1/24", **kwargs}
    with pytest.raises(ConfigError) as info:
        endpoint_from_args(**args)
    assert str(info.value).startswith(f"{option}: ")
    assert words in str(info.value)


def test_endpoint_from_args_ifname_needs_netns() -> None:
    with pytest.raises(ConfigError, match="--ifname needs --netns"):
        endpoint_from_args("mynet", "c3", "02:00:00:00:00:01", "10.0.0.1/24", ifname="eth0")


def test_max_subscribers() -> None:
    assert parse_config(MINIMAL).vtep.max_subscribers == 64
    cfg = parse_config(MINIMAL.replace("[vtep]\n", "[vtep]\nmax_subscribers = 500\n"))
    assert cfg.vtep.max_subscribers == 500
    for bad, words in (("0", "0 is out of range (must be 1..4096 trace/capture/events"),
                       ("4097", "out of range"), ("true", "must be an integer"),
                       ('"64"', "must be an integer")):
        text = MINIMAL.replace("[vtep]\n", f"[vtep]\nmax_subscribers = {bad}\n")
        err = error_of(text)
        assert err.key == "vtep.max_subscribers"
        assert err.line == line_of(text, "max_subscribers =")
        assert words in str(err), str(err)


def test_netns_create() -> None:
    endpoint = ('[[network.endpoint]]\nname = "c1"\nmac = "02:42:c0:a8:37:04"\n'
                'address = "192.168.55.4/24"\n')
    (ep,) = parse_config(MINIMAL + endpoint + 'netns = "c1"\n').networks[0].endpoints
    assert ep.netns_create is False
    (ep,) = parse_config(MINIMAL + endpoint + 'netns = "c1"\nnetns_create = true\n'
                         ).networks[0].endpoints
    assert ep.netns_create is True and ep.netns == "c1"
    text = MINIMAL + endpoint + "netns_create = true\n"
    err = error_of(text)
    assert err.key == "network[0].endpoint[0].netns_create"
    assert err.line == line_of(text, "netns_create") and "needs netns" in str(err)
    err = error_of(MINIMAL + endpoint + 'netns = "c1"\nnetns_create = "yes"\n')
    assert "must be a boolean" in str(err)
    ep = endpoint_from_args("mynet", "c1", "02:42:c0:a8:37:04", "192.168.55.4/24", "c1",
                            "eth0", True)
    assert ep.netns_create is True
    with pytest.raises(ConfigError, match="--netns-create needs --netns"):
        endpoint_from_args("mynet", "c1", "02:42:c0:a8:37:04", "192.168.55.4/24",
                           netns_create=True)


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """Editors on Windows start UTF-8 files with a BOM; TOML text does not include it."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    cfg = load_config(str(path))
    assert cfg.vtep.local.v4 == IPv4Address("198.18.0.1") and cfg.networks[0].vni == 4097
    assert parse_config("\ufeff" + MINIMAL).networks[0].name == "mynet"
    # Line numbers are still right after it.
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.replace("vni = 4097", "vni = -4").encode())
    with pytest.raises(ConfigError, match=r"bom.toml:6: network\[0\].vni: "):
        load_config(str(path))


# ------------------------------------------------------------------------------------------
# IPv6: dual-stack endpoints and peers, an IPv6 underlay (issue 12's config)
# ------------------------------------------------------------------------------------------

DUAL = """\
[vtep]
local = ["2001:db8:18::1", "198.18.0.1"]

[[network]]
name = "mynet"
vni = 4097
mtu = 1430
flowlabel = "inherit"

[[network.endpoint]]
name = "c1"
mac = "02:42:c0:a8:37:04"
address = ["192.168.55.4/24", "fd00:55::4/64"]

[[network.endpoint]]
name = "c6"
mac = "02:42:c0:a8:37:06"
address = "fd00:55::6/64"

[[network.peer]]
mac = "02:42:c0:a8:37:03"
address = ["192.168.55.3", "fd00:55::3"]
vtep = "2001:db8:18::2"
"""


def test_dual_stack_config() -> None:
    from ipaddress import IPv6Address, IPv6Interface

    cfg = parse_config(DUAL)
    assert cfg.vtep.local == Locals(IPv4Address("198.18.0.1"), IPv6Address("2001:db8:18::1"))
    (net,) = cfg.networks
    assert net.flowlabel == "inherit" and net.mtu == 1430
    c1, c6 = net.endpoints
    assert c1.address == IPv4Interface("192.168.55.4/24") and c1.ipv6
    assert c1.addresses == (IPv4Interface("192.168.55.4/24"), IPv6Interface("fd00:55::4/64"))
    assert c6.address == IPv6Interface("fd00:55::6/64") and c6.addresses == (c6.address,)
    (peer,) = net.peers
    assert peer.address == IPv4Address("192.168.55.3") and peer.vtep == IPv6Address(
        "2001:db8:18::2")
    assert peer.addresses == (IPv4Address("192.168.55.3"), IPv6Address("fd00:55::3"))
    # an IPv4-only endpoint keeps IPv6 off, as Docker does on networks without IPv6
    assert not parse_config(GOOD).networks[0].endpoints[0].ipv6


@pytest.mark.parametrize(("old", "new", "key", "words"), [
    ('address = ["192.168.55.4/24", "fd00:55::4/64"]',
     'address = ["192.168.55.4/24", "fd00:55::3/64"]', "network[0].peer[0].address",
     "duplicate address"),
    ('address = ["192.168.55.4/24", "fd00:55::4/64"]',
     'address = ["fd00:55::4/64", "fd00:55::4/64"]', "network[0].endpoint[0].address",
     "listed twice"),
    ('address = ["192.168.55.4/24", "fd00:55::4/64"]', "address = []",
     "network[0].endpoint[0].address", "empty list"),
    ('address = ["192.168.55.4/24", "fd00:55::4/64"]', 'address = ["fe80::4/64"]',
     "network[0].endpoint[0].address", "link-local"),
    ('address = ["192.168.55.4/24", "fd00:55::4/64"]', 'address = ["ff02::4/64"]',
     "network[0].endpoint[0].address", "not a unicast IPv6"),
    ('address = ["192.168.55.4/24", "fd00:55::4/64"]', 'address = [4]',
     "network[0].endpoint[0].address", "not an address"),
    ('address = ["192.168.55.3", "fd00:55::3"]', 'address = ["192.168.55.3", "ff02::1"]',
     "network[0].peer[0].address", "not a unicast IPv6"),
    ('address = ["192.168.55.3", "fd00:55::3"]', 'address = ["fd00:55::3", "fd00:55::3"]',
     "network[0].peer[0].address", "listed twice"),
    ('local = ["2001:db8:18::1", "198.18.0.1"]', 'local = "198.18.0.1"', "network[0].peer[0].vtep",
     "has no IPv6 address"),
])
def test_dual_stack_errors(old: str, new: str, key: str, words: str) -> None:
    assert old in DUAL
    err = error_of(DUAL.replace(old, new, 1))
    assert err.key == key and words in str(err), str(err)
