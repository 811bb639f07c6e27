"""Instruments for lab namespaces: a running tcpdump, and a link's offload features
(``ethtool -k`` to read them, pyroute2's ethtool ioctls to turn tx checksumming off).

Why the features matter here: veth and vxlan hand CHECKSUM_PARTIAL packets across namespaces
without filling in the L4 checksum, so what a userspace reader (vxdp's UDP socket, a TAP, a
capture) sees depends on them; tests and benchmarks set and check them explicitly.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

from dataplane import netns as _netns
from dataplane.errors import VxdpError

__all__ = ["Capture", "disable_tx_checksum", "end_process", "ethtool_features", "read_log"]


def end_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                timeout: float = 10.0) -> bool:
    """Send ``sig`` unless ``proc`` has exited, wait up to ``timeout`` seconds, then SIGKILL.
    True when it had to be killed (it ignored ``sig``)."""
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        return True


def read_log(path: str) -> str:
    """What a lab process wrote to its log file so far ("" when there is none yet)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Capture:
    """A running tcpdump; :meth:`stop` returns what it printed (one line per packet)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.stderr = b""

    def wait_listening(self, timeout: float = 5.0) -> None:
        """Block until tcpdump has attached to the interface ("listening on" on stderr)."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while b"listening on" not in self.stderr:
            left = deadline - time.monotonic()
            if left <= 0:
                raise VxdpError("tcpdump did not start listening in time: "
                                + self.stderr.decode(errors="replace").strip())
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise VxdpError("tcpdump exited: " + self.stderr.decode(errors="replace").strip())
                self.stderr += chunk

    def stop(self, timeout: float = 5.0) -> str:
        """Stop (SIGINT, so tcpdump flushes) unless it already exited after ``-c``; its stdout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.stderr += err or b""
        return (out or b"").decode(errors="replace")

    def wait(self, timeout: float = 5.0) -> str:
        """Wait for a ``-c COUNT`` capture to finish by itself; its stdout (stop on timeout)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.stop()


def ethtool_features(ns: str | None, ifname: str) -> dict[str, str]:
    """``ethtool -k IFNAME`` in namespace ``ns`` (a full name; None: this one) as
    {feature: "on" | "off"}; the "[fixed]" / "[requested on]" notes are dropped."""
    out = _netns.run_in_netns(ns, ["ethtool", "-k", ifname]).stdout
    feats = {}
    for line in out.splitlines()[1:]:
        key, _, value = line.strip().partition(":")
        feats[key] = value.split()[0] if value.split() else ""
    return feats


def disable_tx_checksum(ns: str | None, ifname: str) -> dict[str, bool]:
    """``ethtool -K IFNAME tx off`` inside ``ns`` through pyroute2's ethtool ioctls.

    Why: veth/vxlan hand CHECKSUM_PARTIAL skbs across namespaces without filling the L4
    checksum. A userspace reader of those bytes (a UDP socket receiving a kernel VTEP's
    datagrams, or a TAP) then sees a wrong inner checksum. With tx checksum offload off the
    kernel computes it in software before the frame leaves. Returns the resulting tx-checksum
    feature states.
    """
    if ns is None:
        return _disable_tx_checksum(ifname)
    return _netns.call_in_netns(ns, _disable_tx_checksum, ifname)


def _disable_tx_checksum(ifname: str) -> dict[str, bool]:
    from pyroute2.ethtool.ethtool import Ethtool

    with Ethtool() as et:
        feats = et.get_features(ifname)
        names = [k for k in feats.features.keys() if k.startswith("tx-checksum")]
        for k in names:
            feats.features[k].enable = False
        et.set_features(ifname, feats)
        after = et.get_features(ifname)
        return {k: bool(after.features[k].enable) for k in names}
