"""Named network namespaces and running things inside them, without the ``ip`` tool.

Namespaces are the ones ``ip netns add`` makes: a bind mount of an nsfs inode under
``/run/netns/NAME``, so ``ip netns list`` / ``ip netns exec`` (and Docker-style tooling) see them.
Links and addresses go through pyroute2; programs are started with ``subprocess`` and a
``preexec_fn`` that calls ``setns(2)`` in the forked child (never ``ip netns exec``).

Why raw ``setns(2)`` through ctypes rather than ``pyroute2.netns.setns`` in ``preexec_fn``: the
pyroute2 helper defaults to ``O_CREAT`` (it would silently *create* a missing namespace, forking a
helper from inside the already-forked child) and resolves libc with ``ctypes.util.find_library``,
which itself spawns ``ldconfig`` on first use. Opening the namespace file in the parent and
calling the already-resolved ``setns`` symbol in the child is async-signal-safe enough and fails
loudly in the parent if the namespace is missing. ``os.setns`` only exists from Python 3.12.

Only the *network* namespace changes: a child keeps the parent's mount namespace, so
``/sys/class/net`` still shows the parent's interfaces (``ip netns exec`` remounts ``/sys``; we
do not). Tools that use netlink/ioctl (ip, ping, arping, tcpdump, iperf3) are unaffected;
``/proc/sys/net`` and ``/proc/net`` *do* follow the task's network namespace.

pyroute2 0.9 caveat: its synchronous ``IPRoute`` drives its own asyncio loop, so it cannot be used
from a thread that is already running an event loop (uvloop included) -- it fails with
"This event loop is already running". Async callers must hop to a thread
(``await asyncio.to_thread(...)``); :func:`ns_iproute` raises a clear error instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import pickle
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as _pr_netns

from dataplane.errors import PrivilegeError, VxdpError
from dataplane.validate import check_netns

__all__ = [
    "NETNS_DIR",
    "call_in_netns",
    "create_netns",
    "delete_netns",
    "link_stats64",
    "ensure_netns",
    "get_sysctl",
    "list_netns",
    "netns_exists",
    "netns_path",
    "ns_iproute",
    "open_netns",
    "pids_in_netns",
    "popen_in_netns",
    "remove_netns",
    "require_root",
    "run_in_netns",
    "set_sysctl",
    "setns_fd",
]

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
# <sys/mount.h>
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
#: The host's mount namespace (see _host_mounts): PID 1's, unless VXDP_HOST_MOUNT_NS names
#: another (where PID 1 is not the host's init, or cannot be entered).
HOST_MOUNT_NS = "/proc/1/ns/mnt"

# CDLL(None) is the already-loaded C library of this process: no find_library() (which forks
# ldconfig) and the symbol is resolved here, in the parent, before any preexec_fn runs.
_libc = ctypes.CDLL(None, use_errno=True)
_libc_setns = _libc.setns
_libc_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc_setns.restype = ctypes.c_int

T = TypeVar("T")


def require_root(what: str) -> None:
    """Raise PrivilegeError unless we are root (netns and links need CAP_SYS_ADMIN/NET_ADMIN)."""
    if os.geteuid() != 0:
        raise PrivilegeError(f"{what} needs root (CAP_NET_ADMIN)")


def _check_name(name: str) -> None:
    # The name becomes a path component under /run/netns; refuse anything that escapes it.
    try:
        check_netns(name)
    except ValueError as exc:
        raise VxdpError(str(exc)) from None


def netns_path(name: str) -> str:
    """Path of the bind mount that keeps namespace ``name`` alive (``ip netns`` layout)."""
    _check_name(name)
    return os.path.join(NETNS_DIR, name)


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def netns_exists(name: str) -> bool:
    """True if ``/run/netns/NAME`` exists *and* is a mounted namespace.

    A bare file (left behind by an interrupted ``ip netns add``) is not a namespace: setns on it
    fails with EINVAL. All nsfs inodes share one st_dev, which tells the two apart without statfs.
    """
    try:
        st = os.stat(netns_path(name))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return st.st_dev == _nsfs_dev()


def list_netns() -> list[str]:
    """Names under /run/netns, sorted (what ``ip netns list`` prints, without ids)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def ensure_netns(name: str) -> bool:
    """Create the named namespace (like ``ip netns add``) unless it exists.

    Returns True if this call created it, so callers can remove only what they made. The
    loopback of a fresh namespace is down, as with ``ip netns add``.
    """
    path = netns_path(name)
    if netns_exists(name):
        return False
    require_root("creating network namespaces")
    if os.path.exists(path):
        # Stale mount point from an interrupted creation: take it over.
        try:
            os.unlink(path)
        except OSError as exc:
            raise VxdpError(f"netns {name}: stale {path} cannot be removed: {exc}") from exc
    try:
        # pyroute2 forks a child that unshare()s and bind-mounts /proc/self/ns/net, the same
        # sequence as iproute2 (including making /run/netns a shared mount).
        _pr_netns.create(name)
    except FileExistsError:
        # Lost a race with another creator: it exists now, and it is not ours.
        return False
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise VxdpError(f"cannot create netns {name}: {exc}") from exc
    if not netns_exists(name):
        raise VxdpError(f"cannot create netns {name}: {path} is not a namespace after creation")
    return True


# --- named namespaces the host sees (vxdp's own netns_create) --------------------------------

def _netns_dir_mount() -> str | None:
    """The propagation fields of the mount holding /run/netns in our mount namespace
    (``shared:1``, ``master:1``...), from /proc/self/mountinfo; None when unreadable."""
    try:
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split(" - ", 1)[0].split() for line in f]
    except OSError:
        return None
    best: list[str] | None = None
    for fields in mounts:
        point = fields[4]
        if (NETNS_DIR == point or NETNS_DIR.startswith(point.rstrip("/") + "/")) and (
                best is None or len(point) > len(best[4])):
            best = fields
    return " ".join(best[6:]) if best is not None else None


def _host_mounts() -> str | None:
    """Where a namespace must be bind-mounted for the host to see it: None for our own
    mount namespace, else the path of the host's (PID 1's) mount namespace.

    Our own is right unless /run/netns is a *slave* mount here, i.e. we run in a private
    copy of the host's mounts (``ip netns exec`` makes one, with everything a slave): a bind
    mount made there never reaches the host, which would see only the empty mount point
    file (mode 0000, unusable by ``ip -n``) — and keep it after a SIGKILL. Then the mount is
    made in PID 1's mount namespace instead (and reaches us as its slave); if that cannot be
    entered, VxdpError: better no namespace than one only vxdp can see."""
    fields = _netns_dir_mount()
    if fields is None or "master:" not in fields:
        return None
    host = os.environ.get("VXDP_HOST_MOUNT_NS") or HOST_MOUNT_NS
    try:
        if os.stat(host).st_ino == os.stat("/proc/self/ns/mnt").st_ino:
            return None
    except OSError as exc:
        raise VxdpError(f"vxdp runs in a private mount namespace (e.g. under `ip netns exec`) "
                        f"and cannot enter the host's ({host}: {exc.strerror}), so a "
                        "namespace it made would be invisible to the host; create it first "
                        "(ip netns add)") from None
    return host


def _libc_call(what: str, result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _add_netns(path: str) -> None:
    """iproute2's ``netns_add``, in a child process (it unshares its network namespace): make
    /run/netns a shared mount, create the mount point, bind a new network namespace onto it.
    A failure after the mount point exists removes it, so nothing half-made is left."""
    d = NETNS_DIR.encode()
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
        # Not a mount point yet: make it one (bound onto itself), then shared, as iproute2.
        _libc_call("mount --bind /run/netns", _libc.mount(d, d, b"none", MS_BIND | MS_REC, None))
        _libc_call("mount --make-rshared /run/netns",
                   _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None))
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    try:
        _libc_call("unshare(CLONE_NEWNET)", _libc.unshare(CLONE_NEWNET))
        _libc_call(f"mount --bind /proc/self/ns/net {path}",
                   _libc.mount(b"/proc/self/ns/net", path.encode(), b"none", MS_BIND, None))
    except BaseException:
        os.unlink(path)
        raise


def _del_netns(path: str) -> None:
    _libc.umount2(path.encode(), MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _in_mounts(mounts: str | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a forked child, in mount namespace ``mounts`` (None: ours)."""
    if mounts is None:
        return _call_in_child(None, fn, args, f"netns {args[0]}")
    fd = os.open(mounts, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _call_in_child(lambda: _setns(fd, CLONE_NEWNS), fn, args,
                              f"the host's mount namespace ({mounts})")
    finally:
        os.close(fd)


def create_netns(name: str) -> None:
    """Create the named namespace where the host sees it (``ip netns``, ``ip -n NAME``) —
    see :func:`_host_mounts` — or raise VxdpError naming it. The creation runs in a child
    process: a SIGKILL of the VTEP meanwhile cannot interrupt it half-way."""
    path = netns_path(name)
    require_root("creating network namespaces")
    try:
        mounts = _host_mounts()
    except VxdpError as exc:
        raise VxdpError(f"cannot create netns {name}: {exc}") from None
    try:
        _in_mounts(mounts, _add_netns, path)
    except FileExistsError:
        raise VxdpError(f"cannot create netns {name}: {path} exists but is not a namespace "
                        f"(a leftover? `ip netns del {name}` removes it)") from None
    except OSError as exc:
        raise VxdpError(f"cannot create netns {name}: {exc.strerror or exc}") from None
    if not netns_exists(name):
        _in_mounts(mounts, _del_netns, path)
        raise VxdpError(f"cannot create netns {name}: it was made but {path} is not a "
                        "namespace here (the mounts do not propagate to vxdp)")


def delete_netns(name: str) -> None:
    """Remove a namespace :func:`create_netns` made (in the mount namespace it was made in)."""
    path = netns_path(name)
    mounts = _host_mounts()
    if mounts is None:
        remove_netns(name)
        return
    try:
        _in_mounts(mounts, _del_netns, path)
    except OSError as exc:
        raise VxdpError(f"cannot remove netns {name}: {exc.strerror or exc}") from None


def remove_netns(name: str, missing_ok: bool = True) -> None:
    """Remove the named namespace (like ``ip netns del``).

    This drops the bind mount only. The kernel destroys the namespace (and its veth, vxlan,
    bridge and TAP devices) once no process and no open fd refers to it any more, and does so
    asynchronously in a workqueue: devices may linger for some milliseconds after return.
    """
    path = netns_path(name)
    if not os.path.exists(path):
        if missing_ok:
            return
        raise VxdpError(f"netns {name} does not exist")
    require_root("removing network namespaces")
    # MNT_DETACH (lazy) like iproute2, then the mount point file.
    _libc.umount2(path.encode(), 2)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise VxdpError(f"cannot remove netns {name}: {exc}") from exc


def pids_in_netns(name: str) -> list[int]:
    """PIDs whose network namespace is ``name`` (to kill them before removing it)."""
    try:
        target = os.stat(netns_path(name))
    except FileNotFoundError:
        return []
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def open_netns(name: str) -> int:
    """Open the namespace file (O_CLOEXEC) for setns(2) or IFLA_NET_NS_FD; caller closes it."""
    if not netns_exists(name):
        raise VxdpError(f"netns {name} does not exist")
    return os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)


def setns_fd(fd: int) -> None:
    """Move the *calling thread* into the network namespace open at ``fd``."""
    if _libc_setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def ns_iproute(name: str | None) -> Iterator[IPRoute]:
    """An IPRoute bound to namespace ``name`` (None: the caller's own namespace).

    Never creates the namespace (pyroute2's default flags would). Not usable on a thread with a
    running asyncio loop: see the module docstring.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise VxdpError("pyroute2's synchronous IPRoute cannot run inside an asyncio loop; "
                        "call this from a worker thread (asyncio.to_thread)")
    if name is None:
        ipr = IPRoute()
    else:
        if not netns_exists(name):
            raise VxdpError(f"netns {name} does not exist")
        # flags=0: open only, never O_CREAT.
        ipr = IPRoute(netns=name, flags=0)
    try:
        yield ipr
    finally:
        ipr.close()


def _preexec(fd: int, chained: Callable[[], Any] | None) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the forked child before exec: only the netns changes; the fd is O_CLOEXEC
        # and disappears with the exec.
        if _libc_setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
        if chained is not None:
            chained()
    return preexec


def popen_in_netns(name: str | None, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv)`` with the child in network namespace ``name`` (None: ours).

    Any ``preexec_fn`` given runs after the setns. Raises VxdpError if the namespace or the
    program does not exist.
    """
    argv = list(argv)
    if name is None:
        fd = -1
    else:
        fd = open_netns(name)
        popen_kwargs["preexec_fn"] = _preexec(fd, popen_kwargs.get("preexec_fn"))
    try:
        return subprocess.Popen(argv, **popen_kwargs)
    except FileNotFoundError as exc:
        raise VxdpError(f"{argv[0]}: program not found") from exc
    except subprocess.SubprocessError as exc:
        # "Exception occurred in preexec_fn": setns failed in the child.
        raise VxdpError(f"cannot enter netns {name} to run {argv[0]}: {exc}") from exc
    finally:
        if fd >= 0:
            os.close(fd)


def run_in_netns(name: str | None, argv: Sequence[str], *, timeout: float | None = 30.0,
                 check: bool = True, capture: bool = True, text: bool = True,
                 input: str | bytes | None = None, **popen_kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` inside namespace ``name``.

    With ``check``, a non-zero exit raises VxdpError naming the program, the namespace, the
    status and the last line of stderr (captured output is also on ``exc.__cause__``).
    """
    argv = list(argv)
    if capture:
        popen_kwargs.setdefault("stdout", subprocess.PIPE)
        popen_kwargs.setdefault("stderr", subprocess.PIPE)
    if input is not None:
        popen_kwargs["stdin"] = subprocess.PIPE
    proc = popen_in_netns(name, argv, text=text, **popen_kwargs)
    with proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise VxdpError(f"{argv[0]} in netns {name} timed out after {timeout}s") from exc
        except BaseException:
            proc.kill()
            raise
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and proc.returncode != 0:
        last = ""
        if err:
            lines = (err if isinstance(err, str) else err.decode(errors="replace")).strip().splitlines()
            last = lines[-1] if lines else ""
        cpe = subprocess.CalledProcessError(proc.returncode, argv, out, err)
        raise VxdpError(f"{argv[0]} in netns {name or '(current)'} exited with status "
                        f"{proc.returncode}" + (f": {last}" if last else "")) from cpe
    return result


def call_in_netns(name: str, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
    """Run ``fn(*args)`` in a forked child that joined namespace ``name``; return its result.

    For the few things that are per-namespace but have no netlink API we use (``/proc/sys/net``
    writes, ethtool ioctls on a socket). The result or exception travels back pickled. Keep
    ``fn`` small: it runs in a fork of a possibly multi-threaded process.
    """
    fd = open_netns(name)
    try:
        return _call_in_child(lambda: setns_fd(fd), fn, args, f"netns {name}", timeout)
    finally:
        os.close(fd)


def _setns(fd: int, nstype: int) -> None:
    if _libc_setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _call_in_child(enter: Callable[[], None] | None, fn: Callable[..., T],
                   args: tuple[Any, ...], where: str, timeout: float = 10.0) -> T:
    """``fn(*args)`` in a forked child, after ``enter()`` (joining a namespace) if given; its
    result or exception comes back pickled."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        os.close(rfd)
        os.close(wfd)
        raise
    if pid == 0:  # child
        status = 0
        try:
            os.close(rfd)
            if enter is not None:
                enter()
            try:
                payload = pickle.dumps((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - shipped to the parent
                try:
                    payload = pickle.dumps((False, exc))
                except Exception:  # unpicklable exception
                    payload = pickle.dumps((False, VxdpError(repr(exc))))
            view = memoryview(payload)
            while view:
                n = os.write(wfd, view)
                view = view[n:]
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    # parent
    os.close(wfd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        os.set_blocking(rfd, True)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise VxdpError(f"call in {where} timed out after {timeout}s")
            ready, _, _ = select.select([rfd], [], [], left)
            if not ready:
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    if not chunks:
        raise VxdpError(f"cannot enter {where} (child failed)")
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def link_stats64(name: str | None, ifindex: int, timeout: float = 1.0) -> dict[str, int] | None:
    """The IFLA_STATS64 counters of interface ``ifindex`` in namespace ``name`` (None: ours),
    or None when the namespace or the link is gone.

    A rtnetlink socket opened inside the namespace answers for it. setns(2) moves only the
    calling thread, so a short-lived thread joins the namespace, opens the socket, returns to
    its own and asks; about a millisecond, no fork (``ns_iproute`` costs ~12 ms). The socket is
    closed before returning: an open socket would pin the namespace, and a container's
    namespace must be able to go away under the VTEP (the TAP then reports EBADFD)."""
    from pyroute2.netlink import NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWLINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    result: list[dict[str, int] | None] = [None]

    def ask() -> None:
        try:
            if name is None:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            else:
                fd = open_netns(name)
                home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    setns_fd(fd)
                    try:
                        sock = socket.socket(socket.AF_NETLINK,
                                             socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
                    finally:
                        setns_fd(home)
                finally:
                    os.close(home)
                    os.close(fd)
            with sock:
                sock.settimeout(timeout)
                req = ifinfmsg()
                req["family"] = socket.AF_UNSPEC
                req["index"] = ifindex
                req["header"]["type"] = RTM_GETLINK
                req["header"]["flags"] = NLM_F_REQUEST
                req["header"]["sequence_number"] = 1
                req.encode()
                sock.send(req.data)
                reply = ifinfmsg(sock.recv(65536))
                reply.decode()
                if reply["header"]["type"] != RTM_NEWLINK:      # NLMSG_ERROR: no such link
                    return
                st = reply.get_attr("IFLA_STATS64")
                if st is not None:
                    result[0] = {k: int(v) for k, v in dict(st).items()}
        except (OSError, VxdpError, ValueError):
            return

    t = threading.Thread(target=ask, name="vxdp-link-stats", daemon=True)
    t.start()
    t.join(timeout + 1.0)
    return result[0]


def _sysctl_path(key: str) -> str:
    # Accept "net.ipv4.ip_forward" or "net/ipv4/ip_forward"; dots inside interface names (eth0.5)
    # are not supported in the dotted form, as with sysctl(8) without -p quirks.
    rel = key.replace(".", "/") if "/" not in key else key
    if rel.startswith("/") or ".." in rel.split("/"):
        raise VxdpError(f"invalid sysctl key {key!r}")
    return "/proc/sys/" + rel


def _write_file(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_file(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def set_sysctl(name: str | None, key: str, value: str | int) -> None:
    """Write sysctl ``key`` (``net.ipv4.conf.all.arp_ignore``) in namespace ``name``.

    /proc/sys/net resolves against the writer's network namespace, so the write happens in a
    forked child that joined it.
    """
    path = _sysctl_path(key)
    try:
        if name is None:
            _write_file(path, str(value))
        else:
            call_in_netns(name, _write_file, path, str(value))
    except OSError as exc:
        raise VxdpError(f"sysctl {key}={value} in netns {name or '(current)'}: {exc.strerror}") from exc


def get_sysctl(name: str | None, key: str) -> str:
    """Read sysctl ``key`` in namespace ``name``."""
    path = _sysctl_path(key)
    try:
        if name is None:
            return _read_file(path)
        return call_in_netns(name, _read_file, path)
    except OSError as exc:
        raise VxdpError(f"sysctl {key} in netns {name or '(current)'}: {exc.strerror}") from exc
