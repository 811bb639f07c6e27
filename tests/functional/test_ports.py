"""TapPort against the real kernel: netns move, addressing, frames both ways, removal semantics.

Every namespace is ``vxt<pid>p<n>`` and removed afterwards; traffic stays inside it (overlay
192.168.55.0/24, the other end of the TAP is this test).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import select
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from dataplane import netns
from dataplane.errors import PrivilegeError, VxdpError
from dataplane.lab import Capture, cleanup_prefix, ethtool_features
from dataplane.ports import (
    TAP_DOWN_ERRNOS,
    TAP_GONE_ERRNOS,
    TAP_OFFLOADS,
    VNET_HDR_LEN,
    TapPort,
)

pytestmark = pytest.mark.privileged

MAC = "02:42:c0:a8:37:04"
PEER_MAC = "02:42:c0:a8:37:03"
ADDR = IPv4Interface("192.168.55.4/24")
PEER_IP = "192.168.55.3"

PREFIX = f"vxt{os.getpid() % 100000}p"
_counter = itertools.count()


@pytest.fixture
def nsname() -> Iterator[str]:
    """A fresh, not yet created, namespace name; whatever carries it is removed afterwards."""
    name = f"{PREFIX}{next(_counter)}"
    try:
        yield name
    finally:
        cleanup_prefix(name)


@pytest.fixture(autouse=True, scope="module")
def _leftovers() -> Iterator[None]:
    yield
    cleanup_prefix(PREFIX)
    assert not [n for n in netns.list_netns() if n.startswith(PREFIX)]


def ip_json(ns: str | None, *args: str) -> list[dict]:
    return json.loads(netns.run_in_netns(ns, ["ip", "-j", "-d", *args]).stdout)


def read_until(port: TapPort, match: Callable[[bytes], bool], timeout: float = 3.0) -> bytes:
    """Read frames from the TAP until one matches (others, e.g. stray multicast, are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no matching frame on the TAP fd in time")
        select.select([port.fd], [], [], left)
        frame = port.read()
        if frame is not None and match(frame):
            return frame


def is_arp_request_for(ip: str) -> Callable[[bytes], bool]:
    def match(frame: bytes) -> bool:
        pkt = Ether(frame)
        return ARP in pkt and pkt[ARP].op == 1 and pkt[ARP].pdst == ip
    return match


def arp_request(src_mac: str, src_ip: str, dst_ip: str) -> bytes:
    return bytes(Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff")
                 / ARP(op=1, hwsrc=src_mac, psrc=src_ip, pdst=dst_ip))


def test_moved_port_has_name_mac_address_mtu_and_is_up(nsname: str) -> None:
    port = TapPort.create("vxtp0", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0")
    try:
        assert port.created_netns and netns.netns_exists(nsname)
        assert (port.name, port.ifname, port.netns, port.mtu) == ("vxtp0", "eth0", nsname, 1450)
        (link,) = ip_json(nsname, "addr", "show", "dev", "eth0")
        assert link["ifindex"] == port.ifindex
        assert link["address"] == MAC
        assert link["mtu"] == 1450
        assert {"UP", "LOWER_UP"} <= set(link["flags"])
        assert link["linkinfo"]["info_kind"] == "tun"
        assert link["linkinfo"]["info_data"]["type"] == "tap"
        assert link["linkinfo"]["info_data"]["pi"] is False
        assert link["linkinfo"]["info_data"]["persist"] is False
        inet = [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"]
        assert inet == [("192.168.55.4", 24)]
        # IPv6 off (Docker-like): no link-local address, hence no RS/MLD/DAD noise on the fd.
        assert not [a for a in link["addr_info"] if a["family"] == "inet6"]
        (lo,) = ip_json(nsname, "link", "show", "dev", "lo")
        assert "UP" in lo["flags"]
        # Nothing is left under the TAP's original name in our namespace.
        assert netns.run_in_netns(None, ["ip", "link", "show", "vxtp0"], check=False).returncode != 0
        assert port.alive()
        assert not os.get_inheritable(port.fd) and not os.get_blocking(port.fd)
    finally:
        port.close()
    # We created the namespace for this port, so close() removed it (and the device with it).
    assert not netns.netns_exists(nsname)
    assert not port.alive()
    port.close()  # idempotent


def test_missing_netns_is_an_error_naming_it(nsname: str) -> None:
    """Without create_netns a namespace that does not exist is refused before anything is
    made: no TAP, and no mount point left under /run/netns."""
    with pytest.raises(VxdpError, match=f"netns {nsname} does not exist .*netns_create"):
        TapPort.create("vxtm0", MAC, 1450, ADDR, netns=nsname, ifname="eth0")
    assert not os.path.lexists(netns.netns_path(nsname))
    assert netns.run_in_netns(None, ["ip", "link", "show", "vxtm0"], check=False).returncode != 0


def test_created_netns_is_shared_and_goes_with_its_last_port(nsname: str) -> None:
    """Two ports in one namespace made for them: usable by `ip -n` meanwhile, removed only
    when the second port closes."""
    a = TapPort.create("vxtm1", MAC, 1450, ADDR, netns=nsname, ifname="eth0",
                       create_netns=True)
    b = TapPort.create("vxtm2", PEER_MAC, 1450, IPv4Interface(f"{PEER_IP}/24"), netns=nsname,
                       ifname="eth1")
    try:
        assert a.created_netns and b.created_netns
        links = netns.run_in_netns(None, ["ip", "-n", nsname, "-br", "link"]).stdout
        assert "eth0" in links and "eth1" in links
        a.close()
        assert netns.netns_exists(nsname)
    finally:
        a.close()
        b.close()
    assert not os.path.lexists(netns.netns_path(nsname))


def test_close_removes_device_but_keeps_foreign_netns(nsname: str) -> None:
    assert netns.ensure_netns(nsname)
    port = TapPort.create("vxtp1", MAC, 1400, ADDR, netns=nsname, create_netns=True, ifname="eth0")
    assert not port.created_netns
    port.close()
    # Closing the last fd unregisters a non-persistent TAP synchronously.
    assert netns.run_in_netns(nsname, ["ip", "link", "show", "eth0"], check=False).returncode != 0
    assert netns.netns_exists(nsname)


def test_frames_both_ways_kernel_answers_arp(nsname: str) -> None:
    """A frame written to the fd reaches the interface; the kernel's reply is readable."""
    with TapPort.create("vxtp2", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0") as port:
        cap = Capture(netns.popen_in_netns(nsname, ["tcpdump", "-l", "-nn", "-e", "-c", "1", "-i",
                                                    "eth0", "arp and ether src", PEER_MAC],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        try:
            cap.wait_listening()
            port.write(arp_request(PEER_MAC, PEER_IP, "192.168.55.4"))
            reply = Ether(read_until(port, lambda f: ARP in Ether(f) and Ether(f)[ARP].op == 2))
        finally:
            out = cap.wait(timeout=5)
        assert "Request who-has 192.168.55.4 tell 192.168.55.3" in out
        assert reply.src == MAC and reply.dst == PEER_MAC
        assert reply[ARP].hwsrc == MAC and reply[ARP].psrc == "192.168.55.4"


def test_ping_over_the_fd(nsname: str) -> None:
    """We act as the switch: answer the ARP request and the echo request read from the fd."""
    with TapPort.create("vxtp3", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0") as port:
        ping = netns.popen_in_netns(nsname, ["ping", "-c", "1", "-W", "3", PEER_IP],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            req = Ether(read_until(port, is_arp_request_for(PEER_IP)))
            assert req.src == MAC and req.dst == "ff:ff:ff:ff:ff:ff"
            assert req[ARP].psrc == "192.168.55.4" and req[ARP].hwsrc == MAC
            port.write(bytes(Ether(src=PEER_MAC, dst=MAC)
                             / ARP(op=2, hwsrc=PEER_MAC, psrc=PEER_IP, hwdst=MAC, pdst="192.168.55.4")))
            echo = Ether(read_until(port, lambda f: ICMP in Ether(f)))
            assert echo.dst == PEER_MAC and echo[IP].dst == PEER_IP and echo[ICMP].type == 8
            port.write(bytes(Ether(src=PEER_MAC, dst=MAC)
                             / IP(src=PEER_IP, dst="192.168.55.4")
                             / ICMP(type=0, id=echo[ICMP].id, seq=echo[ICMP].seq)
                             / bytes(echo[ICMP].payload)))
            out, _ = ping.communicate(timeout=5)
        finally:
            if ping.poll() is None:
                ping.kill()
                ping.communicate()
        assert ping.returncode == 0, out


def test_l4_checksums_read_from_tap_are_complete(nsname: str) -> None:
    """Without vnet_hdr the TAP offers no csum offload: the stack fills checksums in, so the
    bytes the VTEP encapsulates are final (unlike a veth, see test_lab tx_csum_off)."""
    with TapPort.create("vxtp4", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0") as port:
        netns.run_in_netns(nsname, ["ip", "neigh", "add", PEER_IP, "lladdr", PEER_MAC,
                                    "dev", "eth0", "nud", "permanent"])
        sender = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                  f"s.sendto(b'x'*300, ('{PEER_IP}', 9999))")
        netns.run_in_netns(nsname, [_python(), "-c", sender])
        pkt = Ether(read_until(port, lambda f: UDP in Ether(f)))
        sent = pkt[UDP].chksum
        del pkt[UDP].chksum
        assert sent == Ether(bytes(pkt))[UDP].chksum != 0


def test_netns_deletion_makes_reads_fail_with_tap_gone(nsname: str) -> None:
    assert netns.ensure_netns(nsname)
    port = TapPort.create("vxtp5", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0")
    try:
        assert port.read() is None  # EAGAIN while alive and quiet
        netns.remove_netns(nsname)
        # The kernel tears the namespace down asynchronously (cleanup_net workqueue).
        deadline = time.monotonic() + 5
        while True:
            poller = select.poll()
            poller.register(port.fd, select.POLLIN)
            events = poller.poll(100)
            try:
                port.read()
            except OSError as exc:
                assert exc.errno in TAP_GONE_ERRNOS, errno.errorcode.get(exc.errno)
                break
            assert time.monotonic() < deadline, "TAP still readable 5 s after netns deletion"
        # poll/epoll report POLLERR, not POLLIN: event loops must treat it as readable.
        assert events and events[0][1] & select.POLLERR
        with pytest.raises(OSError) as info:
            port.write(arp_request(PEER_MAC, PEER_IP, "192.168.55.4"))
        assert info.value.errno in TAP_GONE_ERRNOS
        assert not port.alive()
    finally:
        port.close()


def test_link_delete_in_netns_is_also_tap_gone(nsname: str) -> None:
    with TapPort.create("vxtp6", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0") as port:
        netns.run_in_netns(nsname, ["ip", "link", "del", "eth0"])
        with pytest.raises(OSError) as info:
            port.read()
        assert info.value.errno in TAP_GONE_ERRNOS
        assert not port.alive()


def test_write_to_down_link_is_eio_not_gone(nsname: str) -> None:
    with TapPort.create("vxtp7", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0") as port:
        netns.run_in_netns(nsname, ["ip", "link", "set", "eth0", "down"])
        with pytest.raises(OSError) as info:
            port.write(arp_request(PEER_MAC, PEER_IP, "192.168.55.4"))
        assert info.value.errno in TAP_DOWN_ERRNOS
        assert port.alive() and port.read() is None


def test_vnet_hdr_prefixes_frames(nsname: str) -> None:
    with TapPort.create("vxtp8", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0", vnet_hdr=True) as port:
        (link,) = ip_json(nsname, "link", "show", "dev", "eth0")
        assert link["linkinfo"]["info_data"]["vnet_hdr"] is True
        ping = netns.popen_in_netns(nsname, ["ping", "-c", "1", "-W", "1", PEER_IP],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            raw = read_until(port, lambda f: is_arp_request_for(PEER_IP)(f[VNET_HDR_LEN:]))
        finally:
            ping.kill()
            ping.wait()
        flags, gso_type = struct.unpack_from("BB", raw)
        assert (flags, gso_type) == (0, 0)  # no offload negotiated: plain frame
        # A write needs the header too.
        port.write(bytes(VNET_HDR_LEN) + arp_request(PEER_MAC, PEER_IP, "192.168.55.4"))
        reply = read_until(port, lambda f: ARP in Ether(f[VNET_HDR_LEN:])
                           and Ether(f[VNET_HDR_LEN:])[ARP].op == 2)
        assert Ether(reply[VNET_HDR_LEN:]).dst == PEER_MAC


def test_port_in_current_namespace(nsname: str) -> None:
    """netns=None: the TAP stays where the VTEP runs. Run from a thread that joined a test
    namespace, so nothing touches the real host namespace."""
    assert netns.ensure_netns(nsname)
    result: dict[str, object] = {}

    def body() -> None:
        fd = netns.open_netns(nsname)
        try:
            netns.setns_fd(fd)  # this thread only
        finally:
            os.close(fd)
        try:
            port = TapPort.create("vxtc0", MAC, 1400, ADDR)
            result["port"] = port
            with netns.ns_iproute(None) as ipr:
                (link,) = ipr.link("get", index=port.ifindex)
                result["link"] = (link.get("ifname"), link.get("address"), link.get("mtu"))
            try:
                TapPort.create("vxtc0", MAC, 1400, ADDR)
            except VxdpError as exc:
                result["dup"] = str(exc)
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=body)
    t.start()
    t.join(10)
    assert "error" not in result, result.get("error")
    port = result["port"]
    assert isinstance(port, TapPort)
    assert port.netns is None and port.ifname == "vxtc0"
    assert result["link"] == ("vxtc0", MAC, 1400)
    assert result["dup"] == "cannot create TAP vxtc0: an interface with that name exists"
    port.close()
    assert netns.run_in_netns(nsname, ["ip", "link", "show", "vxtc0"], check=False).returncode != 0
    assert netns.netns_exists(nsname)  # never ours to remove


def test_errors_are_one_line_vxdp_errors(nsname: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VxdpError, match="1 to 15 bytes"):
        TapPort.create("x" * 16, MAC, 1450, ADDR, netns=nsname, create_netns=True)
    with pytest.raises(VxdpError, match="1 to 15 bytes"):
        TapPort.create("vxtp9", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="y" * 16)
    assert not netns.netns_exists(nsname)
    # The target name is taken in the container namespace: nothing half-built is left.
    with pytest.raises(VxdpError, match=f"vxtp9: move into netns {nsname} as lo"):
        TapPort.create("vxtp9", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="lo")
    assert not netns.netns_exists(nsname)  # the namespace it created was removed again
    assert netns.run_in_netns(None, ["ip", "link", "show", "vxtp9"], check=False).returncode != 0
    with TapPort.create("vxtp9", MAC, 1450, ADDR, netns=nsname, create_netns=True) as port:
        assert port.ifname == "vxtp9"
        with pytest.raises(VxdpError, match=f"vxtp9: move into netns {nsname} as vxtp9: File exists"):
            # The name is free here but taken in the target namespace.
            TapPort.create("vxtp9", MAC, 1450, ADDR, netns=nsname, create_netns=True)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PrivilegeError, match=r"^creating TAP devices needs root \(CAP_NET_ADMIN\)$"):
        TapPort.create("vxtp10", MAC, 1450, ADDR)


def _python() -> str:
    import sys
    return sys.executable


def test_uvloop_create_async_and_reader_sees_tap_gone(nsname: str) -> None:
    """How the VTEP uses a port: created off-loop (pyroute2 is sync), read by an epoll reader
    that still fires (POLLERR) and gets EBADFD when the container's netns is deleted."""
    import asyncio

    import uvloop

    async def main() -> int:
        loop = asyncio.get_running_loop()
        with pytest.raises(VxdpError, match="asyncio loop"):
            TapPort.create("vxtu0", MAC, 1450, ADDR, netns=nsname, create_netns=True)
        port = await TapPort.create_async("vxtu0", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0")
        gone: asyncio.Future[int] = loop.create_future()

        def readable() -> None:
            try:
                while port.read() is not None:
                    pass
            except OSError as exc:
                loop.remove_reader(port.fd)
                gone.set_result(exc.errno)

        loop.add_reader(port.fd, readable)
        try:
            await asyncio.to_thread(netns.remove_netns, nsname)
            return await asyncio.wait_for(gone, 5)
        finally:
            port.close()

    assert uvloop.run(main()) in TAP_GONE_ERRNOS


# virtio_net_hdr (include/uapi/linux/virtio_net.h), little-endian on x86.
VNET_F_NEEDS_CSUM = 1
VNET_GSO_NONE, VNET_GSO_TCPV4 = 0, 1


def vnet_fields(raw: bytes) -> tuple[int, int, int, int, int, int]:
    """flags, gso_type, hdr_len, gso_size, csum_start, csum_offset."""
    return struct.unpack_from("<BBHHHH", raw)


def test_offload_needs_vnet_hdr(nsname: str) -> None:
    with pytest.raises(ValueError, match="offload needs vnet_hdr"):
        TapPort.create("vxto0", MAC, 1450, ADDR, netns=nsname, create_netns=True, offload=True)
    assert not netns.netns_exists(nsname)


def test_tunsetoffload_result_matches_the_kernels_view(nsname: str) -> None:
    """TUNSETOFFLOAD before the device goes up: what it accepted is what ethtool shows in the
    container, and without offload the device offers none (the TAP default)."""
    with TapPort.create("vxto1", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0",
                        vnet_hdr=True, offload=True) as port:
        assert port.offloads <= TAP_OFFLOADS
        # Every kernel since 2.6.27 takes CSUM|TSO4|TSO6; the ladder only matters for odd ones.
        assert port.offloads == {"csum", "tso4", "tso6"}
        assert "offloads=csum,tso4,tso6" in repr(port)
        feats = ethtool_features(nsname, "eth0")
        assert feats["tx-checksumming"].startswith("on")
        assert feats["tcp-segmentation-offload"].startswith("on")
        assert feats["tx-tcp-segmentation"].startswith("on")
        assert feats["tx-tcp6-segmentation"].startswith("on")
    with TapPort.create("vxto2", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth1",
                        vnet_hdr=True) as plain:
        assert plain.offloads == frozenset()
        feats = ethtool_features(nsname, "eth1")
        assert feats["tx-checksumming"].startswith("off")
        assert feats["tcp-segmentation-offload"].startswith("off")


def test_offload_udp_arrives_with_partial_checksum(nsname: str) -> None:
    """With TUN_F_CSUM the stack leaves the UDP checksum to us: F_NEEDS_CSUM, csum_start at the
    UDP header (counted from the Ethernet header), csum_offset 6, and the field holds the
    pseudo-header sum, so completing it over frame[csum_start:] gives the right checksum."""
    with TapPort.create("vxto3", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0",
                        vnet_hdr=True, offload=True) as port:
        netns.run_in_netns(nsname, ["ip", "neigh", "add", PEER_IP, "lladdr", PEER_MAC,
                                    "dev", "eth0", "nud", "permanent"])
        sender = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                  f"s.sendto(b'x'*301, ('{PEER_IP}', 9999))")
        netns.run_in_netns(nsname, [_python(), "-c", sender])
        raw = read_until(port, lambda f: UDP in Ether(f[VNET_HDR_LEN:]))
        flags, gso_type, _hdr_len, _gso_size, csum_start, csum_offset = vnet_fields(raw)
        assert flags & VNET_F_NEEDS_CSUM and gso_type == VNET_GSO_NONE
        assert (csum_start, csum_offset) == (14 + 20, 6)
        frame = bytearray(raw[VNET_HDR_LEN:])
        pkt = Ether(bytes(frame))
        del pkt[UDP].chksum
        want = Ether(bytes(pkt))[UDP].chksum
        assert Ether(bytes(frame))[UDP].chksum != want  # only the pseudo-header partial
        total = 0
        data = bytes(frame[csum_start:]) + b"\0" * (len(frame[csum_start:]) % 2)
        for i in range(0, len(data), 2):
            total += (data[i] << 8) | data[i + 1]
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        assert (~total & 0xFFFF or 0xFFFF) == want


def test_offload_tcp_arrives_as_one_super_frame(nsname: str) -> None:
    """With TSO4 a TCP write from the container reaches the fd as one GSO_TCPV4 frame larger
    than the MTU (gso_size = MSS). We play the peer: answer the SYN with a SYN-ACK (MSS 1410,
    64 KB window), so the first flight (initial cwnd, 10 segments) is one super-frame."""
    mss = 1450 - 40
    with TapPort.create("vxto4", MAC, 1450, ADDR, netns=nsname, create_netns=True, ifname="eth0",
                        vnet_hdr=True, offload=True) as port:
        netns.run_in_netns(nsname, ["ip", "neigh", "add", PEER_IP, "lladdr", PEER_MAC,
                                    "dev", "eth0", "nud", "permanent"])
        sender = ("import socket; s=socket.create_connection(('%s', 5201), timeout=5); "
                  "s.sendall(b'y' * 65536); import time; time.sleep(3)" % PEER_IP)
        proc = netns.popen_in_netns(nsname, [_python(), "-c", sender],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            def is_tcp(f: bytes) -> bool:
                return TCP in Ether(f[VNET_HDR_LEN:])

            syn = Ether(read_until(port, is_tcp)[VNET_HDR_LEN:])
            assert syn[TCP].flags == "S"
            synack = (Ether(src=PEER_MAC, dst=MAC)
                      / IP(src=PEER_IP, dst="192.168.55.4")
                      / TCP(sport=5201, dport=syn[TCP].sport, flags="SA", seq=1000,
                            ack=syn[TCP].seq + 1, window=65535, options=[("MSS", mss)]))
            port.write(bytes(VNET_HDR_LEN) + bytes(synack))

            def is_data(f: bytes) -> bool:
                p = Ether(f[VNET_HDR_LEN:])
                return TCP in p and len(p[TCP].payload) > 0

            raw = read_until(port, is_data)
        finally:
            proc.kill()
            proc.wait()
        flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = vnet_fields(raw)
        frame = raw[VNET_HDR_LEN:]
        assert gso_type & 0x7F == VNET_GSO_TCPV4
        assert flags & VNET_F_NEEDS_CSUM and (csum_start, csum_offset) == (34, 16)
        assert gso_size == mss
        assert hdr_len >= 14 + 20 + 20  # the kernel's hint: Ethernet + IP + TCP headers
        # Several MSS in one frame: the container handed over a super-frame.
        assert len(frame) - 54 > 2 * mss and len(frame) > 1450 + 14
        pkt = Ether(frame)
        assert pkt[TCP].seq == syn[TCP].seq + 1
        assert bytes(pkt[TCP].payload) == b"y" * len(pkt[TCP].payload)
