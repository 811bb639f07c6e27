"""The ``vxdp`` command (DESIGN.md §4). Console script: ``vxdp = dataplane.cli:main``.

Every sub-command except ``run`` and ``demo`` is a thin client of the control socket
(:mod:`dataplane.control`). Arguments are validated here with the same parsers as the config
file, so a typo is reported before anything is sent, and nothing prints a traceback for bad
input: errors are one line ``vxdp: ...`` on stderr. Exit codes: 0 ok, 1 runtime error (socket
missing, refused by the server...), 2 bad usage/arguments/config, 130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn

from dataplane import __version__
from dataplane.config import endpoint_from_args
from dataplane.control import ControlClient
from dataplane.errors import ConfigError, ControlError, VxdpError
from dataplane.fmt import (
    format_endpoint,
    format_explain,
    format_fdb,
    format_neigh,
    format_record,
    format_stats,
)
from dataplane.validate import (
    check_ifname,
    check_network_name,
    parse_mac,
    parse_neigh_ip,
    parse_underlay_ip,
    parse_unicast_mac,
    parse_vni,
    show,
)

DEFAULT_SOCKET = "/run/vxdp/vxdp.sock"
SOCKET_ENV = "VXDP_SOCKET"


class UsageError(VxdpError):
    """A command-line argument argparse accepted but that is invalid (exit 2, like argparse)."""


EPILOG = """\
examples:
  vxdp run /etc/vxdp/manager.toml          start a VTEP in the foreground
  vxdp -s /run/vxdp/manager.sock fdb show  FDB of the VTEP named "manager"
  vxdp fdb append 00:00:00:00:00:00 dst 198.18.0.3 vni 4097
                                           add a VTEP to a network's flood list
  vxdp fdb add 02:42:c0:a8:37:03 dst 2001:db8:18::2 port 8472 remote_vni 5000 dev mynet
                                           a peer behind a VTEP on another port and VNI
  vxdp neigh add 192.168.55.3 lladdr 02:42:c0:a8:37:03 vni 4097
  vxdp neigh add fd00:55::3 lladdr 02:42:c0:a8:37:03 dev mynet
  vxdp trace --count 10 --port c1          watch forwarding decisions live
  vxdp explain --from c1 --to 192.168.55.3 dry-run a frame's path

The control socket is -s PATH, else $VXDP_SOCKET, else /run/vxdp/vxdp.sock.
"""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    args: argparse.Namespace
    socket: str
    extra: list[str]

    def client(self) -> ControlClient:
        return ControlClient(self.socket)


def _print(line: str = "") -> None:
    print(line, flush=True)  # flush per line: trace/events are read live through pipes


def _print_json(value: Any) -> None:
    _print(json.dumps(value, indent=2))


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _vni_arg(text: str) -> int:
    try:
        return parse_vni(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ifname_arg(text: str) -> str:
    try:
        return check_ifname(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class _Grammar:
    """``bridge``/``ip``-style arguments of one table command: an optional first value (MAC,
    IP), then in any order ``keyword value`` pairs and bare words (``permanent``), some of
    them required, some exclusive of each other (``vni N`` or ``dev NET``)."""

    usage: str
    first: tuple[str, Callable[[str], Any]] | None = None     # request argument, parser
    keywords: Mapping[str, tuple[str, Callable[[str], Any]]] = field(default_factory=dict)
    words: Mapping[str, tuple[str, Any]] = field(default_factory=dict)  # word -> (arg, value)
    required: Sequence[str] = ()               # keywords that must be given
    exclusive: Sequence[tuple[str, ...]] = ()  # groups of keywords/words: at most one each

    def parse(self, what: str, tokens: Sequence[str]) -> dict[str, Any]:
        """{argument: value}; UsageError naming what is wrong, with the usage line."""
        usage = f"(usage: {what} {self.usage})"
        out: dict[str, Any] = {}
        seen: list[str] = []
        i = 0
        if self.first is not None:
            name, parse = self.first
            if not tokens:
                raise UsageError(f"{what}: missing {name.upper()} {usage}")
            try:
                out[name] = parse(tokens[0])
            except ValueError as exc:
                raise UsageError(f"{what}: {exc}") from None
            i = 1
        while i < len(tokens):
            word = tokens[i]
            if word in seen:
                raise UsageError(f"{what}: {word} given twice")
            for group in self.exclusive:
                other = next((w for w in seen if w in group), None)
                if word in group and other is not None:
                    raise UsageError(f"{what}: {other} and {word} exclude each other {usage}")
            seen.append(word)
            if word in self.words:
                arg, value = self.words[word]
                out[arg] = value
                i += 1
                continue
            if word not in self.keywords:
                raise UsageError(f"{what}: unexpected {word!r} {usage}")
            if i + 1 >= len(tokens):
                raise UsageError(f"{what}: {word} needs a value {usage}")
            arg, parse = self.keywords[word]
            try:
                out[arg] = parse(tokens[i + 1])
            except ValueError as exc:
                raise UsageError(f"{what}: {word}: {exc}") from None
            i += 2
        for word in self.required:
            if word not in seen:
                raise UsageError(f"{what}: missing {word} {usage}")
        return out


def _vtep_ip(text: str) -> str:
    return str(parse_underlay_ip(text))


def _neigh_ip(text: str) -> str:
    return str(parse_neigh_ip(text))


def _lladdr(text: str) -> str:
    return parse_unicast_mac(text, what="a neighbour entry")


def _udp_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{show(text)} is not a UDP port (1..65535)")
    return int(text)


def _network(text: str) -> str:
    return check_network_name(text)


_NET = {"vni": ("vni", parse_vni), "dev": ("dev", _network)}
_REMOTE = {"dst": ("dst", _vtep_ip), "port": ("port", _udp_port),
           "remote_vni": ("remote_vni", parse_vni)}
_FDB_STATE_WORDS = {"permanent": ("state", "permanent"), "static": ("state", "static"),
                    "dynamic": ("state", "dynamic")}
_WHERE = "[vni N | dev NET]"
_FDB_CHANGE = _Grammar(
    f"MAC dst IP [port P] [remote_vni N] {_WHERE} [permanent|static|dynamic]",
    ("mac", parse_mac), {**_REMOTE, **_NET}, _FDB_STATE_WORDS, ("dst",),
    (("vni", "dev"), tuple(_FDB_STATE_WORDS)))

#: The grammar of each table command, by (table, action).
_GRAMMARS: dict[tuple[str, str], _Grammar] = {
    ("fdb", "add"): _FDB_CHANGE,
    ("fdb", "append"): _FDB_CHANGE,
    ("fdb", "replace"): _FDB_CHANGE,
    ("fdb", "del"): _Grammar(f"MAC [dst IP] [port P] [remote_vni N] {_WHERE}",
                             ("mac", parse_mac), {**_REMOTE, **_NET},
                             exclusive=(("vni", "dev"),)),
    ("fdb", "flush"): _Grammar(f"{_WHERE} [dynamic]", None, _NET,
                               {"dynamic": ("dynamic", True)}, exclusive=(("vni", "dev"),)),
    ("neigh", "add"): _Grammar(f"IP lladdr MAC {_WHERE}", ("ip", _neigh_ip),
                               {"lladdr": ("lladdr", _lladdr), **_NET}, required=("lladdr",),
                               exclusive=(("vni", "dev"),)),
    ("neigh", "del"): _Grammar(f"IP [lladdr MAC] {_WHERE}", ("ip", _neigh_ip),
                               {"lladdr": ("lladdr", _lladdr), **_NET},
                               exclusive=(("vni", "dev"),)),
}


@dataclass(frozen=True)
class _Table:
    """The two tables the CLI edits the way ``bridge fdb`` and ``ip neigh`` do."""

    name: str                                  # "fdb" / "neigh": command word and request prefix
    render: Callable[[list[dict[str, Any]]], list[str]]

    def grammar(self, action: str) -> _Grammar:
        return _GRAMMARS[(self.name, action)]


_FDB = _Table("fdb", format_fdb)
_NEIGH = _Table("neigh", format_neigh)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def cmd_run(ctx: _Ctx) -> int:
    try:
        from dataplane.vtep import run_main  # noqa: PLC0415 - heavy imports only for `run`
    except ImportError as exc:
        raise VxdpError(f"run: cannot load the dataplane: {exc}") from None
    rc = run_main(ctx.args.config)
    return int(rc or 0)


def cmd_demo(ctx: _Ctx) -> int:
    try:
        from dataplane.demo import main as demo_main  # noqa: PLC0415
    except ImportError as exc:
        raise VxdpError(f"demo: cannot load the demo: {exc}") from None
    rc = demo_main(list(ctx.extra))
    return int(rc or 0)


def _table_show(table: _Table) -> Callable[[_Ctx], int]:
    """``vxdp fdb show`` / ``vxdp neigh show``: the server's rows, as text or JSON."""
    def show(ctx: _Ctx) -> int:
        entries = ctx.client().request(f"{table.name}.show")
        if ctx.args.json:
            _print_json(entries)
        else:
            for line in table.render(entries or []):
                _print(line)
        return 0
    return show


def _table_change(table: _Table) -> Callable[[_Ctx], int]:
    """``vxdp fdb add|append|replace|del|flush`` / ``vxdp neigh add|del``: validated here with
    the config's rules, then one request."""
    def change(ctx: _Ctx) -> int:
        action = ctx.args.action
        values = table.grammar(action).parse(f"{table.name} {action}", ctx.args.tokens)
        ctx.client().request(f"{table.name}.{action}", **values)
        return 0
    return change




def cmd_stats(ctx: _Ctx) -> int:
    stats = ctx.client().request("stats")
    if ctx.args.json:
        _print_json(stats)
    elif isinstance(stats, dict):
        _print(format_stats(stats))
    else:
        _print(json.dumps(stats))
    return 0


def _follow(ctx: _Ctx, cmd: str, render: Callable[[dict[str, Any]], str], limit: int | None,
            **args: Any) -> int:
    """Print a stream's records until it ends, ``limit`` is reached or Ctrl-C (exit 0)."""
    client = ctx.client()
    records = client.stream(cmd, **args)
    seen = 0
    try:
        with contextlib.closing(records):
            for record in records:
                _print(render(record))
                seen += 1
                if limit is not None and seen >= limit:
                    break
    except KeyboardInterrupt:
        pass
    end = getattr(client, "end", None) or {}
    lost, ring = int(end.get("lost") or 0), int(end.get("ring_lost") or 0)
    if lost or ring:
        # Like tcpdump's "N packets dropped by kernel": a slow reader loses records, and
        # says so, rather than slowing the dataplane down.
        print(f"vxdp: {cmd}: {lost} record(s) lost (reader too slow or over the rendering "
              f"budget), {ring} lost in the dataplane's ring", file=sys.stderr)
    return 0


def cmd_trace(ctx: _Ctx) -> int:
    a = ctx.args
    render = (lambda r: json.dumps(r)) if a.json else format_record
    # The server ends the stream after --count records, with its loss figures: read to
    # the end instead of stopping at the count.
    return _follow(ctx, "trace", render, None, count=a.count, port=a.port, vni=a.vni)


def cmd_events(ctx: _Ctx) -> int:
    a = ctx.args
    render = (lambda r: json.dumps(r)) if a.json else format_record
    return _follow(ctx, "events", render, a.count)


# pcapng block types that carry one packet each (Enhanced, Simple, obsolete Packet Block).
_PCAPNG_PACKET_BLOCKS = frozenset({0x00000006, 0x00000003, 0x00000002})
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"  # palindromic: readable before the byte order is known


def pcapng_packet_count(data: bytes, order: str = "<") -> tuple[int, str]:
    """Count packet blocks in a run of pcapng blocks. Returns (count, byte order) so the order
    learnt from a Section Header Block carries over to the next chunk of the same file."""
    count = 0
    off = 0
    while off + 12 <= len(data):
        if data[off:off + 4] == _PCAPNG_SHB:
            bom = data[off + 8:off + 12]
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack_from(order + "II", data, off)
        if blen < 12 or blen % 4 or off + blen > len(data):
            break  # not a well-formed block: stop counting, the bytes are still written
        if btype in _PCAPNG_PACKET_BLOCKS:
            count += 1
        off += blen
    return count, order


def cmd_capture(ctx: _Ctx) -> int:
    a = ctx.args
    to_stdout = a.write == "-"
    out: IO[bytes]
    if to_stdout:
        out = sys.stdout.buffer
    else:
        try:
            out = open(a.write, "wb")  # noqa: SIM115 - closed in finally below
        except OSError as exc:
            raise VxdpError(f"cannot write {a.write}: {exc.strerror or exc}") from None
    packets = 0
    order = "<"
    client = ctx.client()
    records = client.stream("capture", count=a.count, port=a.port)
    try:
        with contextlib.closing(records):
            for record in records:
                blob = record.get("pcapng")
                if not blob:
                    continue
                try:
                    data = base64.b64decode(blob, validate=True)
                except (binascii.Error, ValueError, TypeError):
                    raise ControlError("garbled capture record from vxdp") from None
                try:
                    out.write(data)
                    out.flush()  # a Ctrl-C or crash still leaves a readable file
                except OSError as exc:
                    raise VxdpError(f"cannot write {a.write}: {exc.strerror or exc}") from None
                n, order = pcapng_packet_count(data, order)
                packets += n
                if a.count is not None and packets >= a.count:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        if not to_stdout:
            out.close()
    summary = f"{packets} packet{'s' if packets != 1 else ''} written to {a.write}"
    # With -w - the pcapng owns stdout; the summary goes where tcpdump puts it.
    print(summary, file=sys.stderr if to_stdout else sys.stdout, flush=True)
    return 0


def _parse_to(text: str) -> str:
    with contextlib.suppress(ValueError):
        return parse_mac(text)
    try:
        return str(parse_neigh_ip(text))
    except ValueError:
        raise UsageError(f"explain: --to {text!r} is neither an IP address nor a MAC "
                         "address") from None


def cmd_explain(ctx: _Ctx) -> int:
    a = ctx.args
    result = ctx.client().request("explain", **{"from": a.src, "to": _parse_to(a.to)})
    if a.json:
        _print_json(result)
    else:
        for line in format_explain(result):
            _print(line)
    return 0


def cmd_endpoint_add(ctx: _Ctx) -> int:
    a = ctx.args
    ep = endpoint_from_args(a.network, a.name, a.mac, a.address, a.netns, a.ifname,
                            a.netns_create)
    addresses = [str(x) for x in ep.addresses]
    ctx.client().request("endpoint.add", network=a.network, name=ep.name, mac=ep.mac,
                         address=addresses[0] if len(addresses) == 1 else addresses,
                         netns=ep.netns, ifname=ep.ifname, netns_create=ep.netns_create or None)
    where = f" in netns {ep.netns} as {ep.ifname or ep.name}" if ep.netns else ""
    _print(f"endpoint {ep.name} added to network {a.network} ({ep.mac} "
           f"{' '.join(addresses)}){where}")
    return 0


def cmd_endpoint_show(ctx: _Ctx) -> int:
    entries = ctx.client().request("endpoint.show")
    if ctx.args.json:
        _print_json(entries)
    else:
        for entry in entries or []:
            _print(format_endpoint(entry))
    return 0


def cmd_endpoint_del(ctx: _Ctx) -> int:
    name = ctx.args.name
    try:
        check_ifname(name)
    except ValueError as exc:
        raise UsageError(f"endpoint del: {exc}") from None
    ctx.client().request("endpoint.del", name=name)
    _print(f"endpoint {name} removed")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)


def _sub(parent: Any, name: str, help_text: str, func: Callable[[_Ctx], int],
         **kwargs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = parent.add_parser(
        name, help=help_text, description=kwargs.pop("description", help_text),
        formatter_class=_Formatter, **kwargs)
    parser.set_defaults(func=func, _parser=parser)
    return parser


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _table_commands(sub: Any, table: _Table, help_text: str, show_help: str,
                    actions: Sequence[tuple[str, str]], tokens_help: str) -> None:
    """``vxdp fdb`` / ``vxdp neigh``: ``show`` (also the default) and one sub-command per
    change action, each with its own usage line."""
    show, change = _table_show(table), _table_change(table)
    parent = _sub(sub, table.name, help_text, show)
    actions_sub = parent.add_subparsers(dest="action", metavar="ACTION", title="actions",
                                        help="ACTION --help shows its arguments")
    actions_sub.required = True
    _json_flag(_sub(actions_sub, "show", show_help, show))
    for action, text in actions:
        g = table.grammar(action)
        p = _sub(actions_sub, action, text, change, usage=f"vxdp {table.name} {action} {g.usage}")
        p.add_argument("tokens", nargs="*", metavar="ARGS", help=tokens_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vxdp", formatter_class=_Formatter, epilog=EPILOG,
        description="vxdp: a userspace VXLAN (RFC 7348) dataplane and its control client.")
    parser.add_argument("-s", "--socket", metavar="PATH",
                        help=f"control socket of the vxdp to talk to (default: ${SOCKET_ENV}, "
                             f"else {DEFAULT_SOCKET})")
    parser.add_argument("--version", action="version", version=f"vxdp {__version__}")
    parser.set_defaults(_parser=parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                help="vxdp COMMAND --help shows its options")
    sub.required = True

    p = _sub(sub, "run", "run a VTEP in the foreground from a TOML config", cmd_run,
             description="Run a VTEP in the foreground. SIGTERM/SIGINT remove what it created "
                         "and exit 0.")
    p.add_argument("config", metavar="CONFIG", help="TOML configuration file")

    _sub(sub, "demo", "reproduce the Docker overlay walkthrough in userspace", cmd_demo,
         add_help=False,
         description="Run the walkthrough from reference/ (unattended when stdin is no TTY). "
                     "Options (e.g. --store etcd, --help) are passed to the demo.")

    _table_commands(sub, _FDB, "forwarding database (like `bridge fdb`)",
                    "list FDB entries like `bridge fdb show`",
                    (("add", "add an entry (fails if the MAC is already there)"),
                     ("append", "add one more destination for a MAC (flood list: "
                                "00:00:00:00:00:00)"),
                     ("replace", "add or replace an entry"),
                     ("del", "delete an entry (one destination with dst IP [port P] "
                             "[remote_vni N], else all)"),
                     ("flush", "delete the dynamic and static entries (only the learned "
                               "ones with dynamic), as `bridge fdb flush`")),
                    "MAC, the remote VTEP's IPv4 or IPv6 address (dst), its UDP port and the "
                    "VNI on the wire when they differ from this VTEP's (port, remote_vni), "
                    "the network (vni N or dev NET: needed when several are served) and the "
                    "state (permanent by default)")
    _table_commands(sub, _NEIGH, "neighbour (ARP / ND proxy) table (like `ip neigh`)",
                    "list neighbour entries like `ip neigh show`",
                    (("add", "add a permanent neighbour entry"),
                     ("del", "delete a neighbour entry")),
                    "overlay IPv4 or IPv6 address, its MAC, and the network (vni N or dev "
                    "NET: needed when several networks are served)")

    p = _sub(sub, "stats", "per-port counters and drops by reason", cmd_stats)
    _json_flag(p)

    p = _sub(sub, "trace", "print forwarding decisions live, one per packet", cmd_trace)
    _json_flag(p)
    p.add_argument("--count", type=_count_arg, metavar="N", help="stop after N packets")
    p.add_argument("--port", type=_ifname_arg, metavar="NAME",
                   help="only packets entering or leaving this endpoint")
    p.add_argument("--vni", type=_vni_arg, metavar="N", help="only this network")

    p = _sub(sub, "capture", "write inner frames and outer datagrams to a pcapng file",
             cmd_capture)
    p.add_argument("-w", "--write", required=True, metavar="FILE",
                   help="pcapng file to write ('-' for stdout)")
    p.add_argument("--count", type=_count_arg, metavar="N", help="stop after N packets")
    p.add_argument("--port", type=_ifname_arg, metavar="NAME", help="only this endpoint")

    p = _sub(sub, "explain", "dry-run a frame from an endpoint, step by step", cmd_explain)
    p.add_argument("--from", dest="src", required=True, metavar="EP",
                   help="endpoint the frame enters from")
    p.add_argument("--to", required=True, metavar="IP|MAC", help="destination IPv4 or MAC")
    _json_flag(p)

    p = _sub(sub, "events", "misses, learning, moves and ageing, live (like `ip monitor`)",
             cmd_events)
    _json_flag(p)
    p.add_argument("--count", type=_count_arg, metavar="N", help="stop after N events")

    _endpoint_commands(sub)
    return parser


def _endpoint_commands(sub: Any) -> None:
    """``vxdp endpoint add|del|show``."""
    ep = _sub(sub, "endpoint", "attach / detach a container at run time", cmd_endpoint_add)
    ep_sub = ep.add_subparsers(dest="action", metavar="ACTION", title="actions",
                               help="ACTION --help shows its arguments")
    ep_sub.required = True
    p = _sub(ep_sub, "add", "create a TAP endpoint in a network", cmd_endpoint_add)
    p.add_argument("--network", required=True, metavar="NAME", help="network to attach to")
    p.add_argument("--name", required=True, metavar="N", help="TAP name on the host (<= 15)")
    p.add_argument("--mac", required=True, metavar="M", help="unicast MAC address")
    p.add_argument("--address", required=True, metavar="A/P", action="append",
                   help="address with prefix length, e.g. 192.168.55.6/24; again for dual "
                        "stack: --address fd00:55::6/64")
    p.add_argument("--netns", metavar="NS", help="move the TAP into this named netns")
    p.add_argument("--ifname", metavar="IF", help="name inside the netns (needs --netns)")
    p.add_argument("--netns-create", action="store_true",
                   help="create the netns if it does not exist (removed again with the "
                        "endpoint); without this a missing netns is an error")
    p = _sub(ep_sub, "del", "remove an endpoint", cmd_endpoint_del)
    p.add_argument("name", metavar="NAME", help="endpoint (TAP) name")
    p = _sub(ep_sub, "show", "list the endpoints attached to this VTEP", cmd_endpoint_show)
    _json_flag(p)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _error(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"vxdp: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 2


def _usage_exit(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.error(message)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 1 and os.environ.get("CNI_COMMAND"):
        # Run by a container runtime as the CNI plugin of "type": "vxdp" (runtimes find a
        # plugin by that name in CNI_PATH and run it with no arguments): be vxdp-cni.
        from dataplane.cni_plugin import main as cni_main
        return cni_main()
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command != "demo":
            _usage_exit(args._parser, f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse: --help, --version (0), usage errors (2)
        return _exit_code(exc)
    sock = args.socket or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    ctx = _Ctx(args=args, socket=sock, extra=extra)
    try:
        rc = args.func(ctx)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except (UsageError, ConfigError) as exc:
        _error(str(exc))
        return 2
    except VxdpError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the promise is: never a traceback
        if os.environ.get("VXDP_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (VXDP_DEBUG=1 shows a traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
