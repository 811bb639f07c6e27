"""Docker "hosts" in a lab: one real dockerd per lab host namespace, each private, each with
its own plugins directory, for the Docker tests, ``vxdp demo --docker`` and Docker's own
overlay as a VXLAN peer.

What must be private per host, and how (worked out in ``notes/docker-cni.md`` §2):

* the network namespace: the lab host's (dockerd is started with setns, never
  ``ip netns exec``, which remounts /sys and hides the cgroup mounts);
* a *persistent* mount namespace, bound to ``ROOT/mnt`` like ``ip netns`` binds a netns, in
  which ``/run/docker/plugins`` (plugin discovery is hard-coded there) is ``ROOT/plugins``,
  and ``/run/containerd`` is masked so dockerd starts its own containerd instead of using a
  system one. It outlives dockerd: the netns files of running containers are bind mounts
  in it, which a restarted dockerd (``--live-restore``) must find again. ``vxdp run`` for
  that host runs in it too (:meth:`DockerHost.enter`), so its ``[docker]`` socket is the
  real ``/run/docker/plugins/vxdp.sock`` and the containers' SandboxKeys open;
* ``--data-root``, ``--exec-root``, ``--pidfile``, ``-H unix://``, ``--config-file``,
  ``--cgroup-parent``; no bridge, no iptables, no IP forwarding, the ``vfs`` storage driver
  (no overlay mounts; the image is a 1 MB busybox).

:meth:`DockerHost.close` removes everything: containers and networks (while the plugin can
still hear about it), dockerd, its containerd and shims, left-over container processes (by
cgroup), processes still in the mount namespace, the mounts, the directories and the
cgroups. ``/run/docker/plugins`` is a mount point in every host's mount namespace, and
removing the directory would silently detach those mounts, so it is removed only by the last
lab host alive on the machine, and only if a lab made it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dataplane import netns as _netns
from dataplane.errors import VxdpError
from dataplane.lab.namespaces import Lab, _kill_pids

__all__ = ["DockerHost", "IMAGE", "busybox_rootfs", "docker_cli"]

IMAGE = "vxdp-busybox"
PLUGINS = "/run/docker/plugins"
_SHARED = "/run/vxdp-lab-docker"          # one marker per live lab host; see _register()
CLONE_NEWNS = 0x00020000
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "ip", "ping", "cat", "sleep", "ifconfig", "route", "arping", "nc",
           "hostname", "grep", "sed", "awk", "ps", "echo", "true", "head", "dd", "sha256sum",
           "wc", "seq", "timeout", "env", "mkdir", "rm", "test", "[")

_libc = ctypes.CDLL(None, use_errno=True)
SLEEP = ("sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait")


def docker_cli() -> str:
    """Debian's client (/usr/bin/docker) first: another one earlier in PATH (a newer static
    client) also works but negotiates down; the tests want the packaged pair."""
    for path in ("/usr/bin/docker", shutil.which("docker") or ""):
        if path and os.access(path, os.X_OK):
            return path
    raise VxdpError("docker is not installed (apt-get install docker.io; `make deps` does)")


def busybox_rootfs() -> bytes:
    """A tar of the smallest useful image: static busybox and its applets."""
    if not os.path.exists(BUSYBOX):
        raise VxdpError(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _run(argv: Sequence[str], timeout: float = 30.0) -> None:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise VxdpError(f"{' '.join(argv)}: {p.stderr.strip() or p.returncode}")


@dataclass(eq=False)
class DockerHost:
    """A dockerd in lab host ``host`` (see the module docstring). Use :meth:`create`."""

    lab: Lab
    host: str
    root: str
    data: str
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    _closed: bool = False
    _images: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, lab: Lab, host: str, *, args: Sequence[str] = (),
               image: bool = True) -> DockerHost:
        """Set up the host's mount namespace, start dockerd (extra ``args``, e.g.
        ``--live-restore``) and import the busybox image."""
        ns = lab.ns(host)
        d = cls(lab, host, f"/run/{ns}-d", f"/var/lib/{ns}-d", tuple(args))
        atexit.register(d.close)
        try:
            d._mount_ns()
            # dockerd warns on every `docker run` that networking will not work when the
            # host does not forward IPv4; irrelevant to an overlay, and misleading in the
            # demo's output. Only the lab host's namespace is touched.
            _netns.set_sysctl(ns, "net.ipv4.ip_forward", 1)
            d.start()
            if image:
                d.import_image()
        except BaseException:
            d.close()
            raise
        return d

    # -- paths ----------------------------------------------------------------------------------

    @property
    def ns(self) -> str:
        return self.lab.ns(self.host)

    @property
    def sock(self) -> str:
        return f"{self.root}/docker.sock"

    @property
    def exec_root(self) -> str:
        return f"{self.root}/exec"

    @property
    def mnt(self) -> str:
        return f"{self.root}/mnt"

    @property
    def log_path(self) -> str:
        return f"{self.root}/dockerd.log"

    @property
    def plugin_dir(self) -> str:
        """``/run/docker/plugins`` as this host's dockerd (and vxdp) see it."""
        return f"{self.root}/plugins"

    # -- set-up -----------------------------------------------------------------------------------

    def _mount_ns(self) -> None:
        for sub in ("exec", "plugins", "cli", "nocontainerd"):
            os.makedirs(f"{self.root}/{sub}", exist_ok=True)
        os.makedirs(self.data, exist_ok=True)
        with open(f"{self.root}/daemon.json", "w") as f:
            f.write("{}\n")
        _register(self.ns)
        # The file that holds the namespace must be on a non-shared mount.
        _run(["mount", "--bind", self.root, self.root])
        _run(["mount", "--make-private", self.root])
        open(self.mnt, "w").close()
        script = f"mount --bind {self.root}/plugins {PLUGINS}"
        if os.path.isdir("/run/containerd"):
            script += f" && mount --bind {self.root}/nocontainerd /run/containerd"
        _run(["unshare", f"--mount={self.mnt}", "--propagation", "private", "sh", "-c", script])

    def enter(self) -> Callable[[], None]:
        """A ``preexec_fn`` that moves a child (already in the host's netns) into this
        host's mount namespace: for dockerd, and for ``vxdp run``."""
        path = self.mnt

        def preexec() -> None:
            # setns(CLONE_NEWNS) moves the caller to the new namespace's root directory:
            # go back to the working directory Popen set (``python -m dataplane`` imports
            # the package from there).
            cwd = os.getcwd()
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNS) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns(mnt): {os.strerror(err)}")
            finally:
                os.close(fd)
            os.chdir(cwd)
        return preexec

    def start(self, timeout: float = 30.0) -> None:
        argv = ["dockerd", "--data-root", self.data, "--exec-root", self.exec_root,
                "--pidfile", f"{self.root}/docker.pid", "-H", f"unix://{self.sock}",
                "--config-file", f"{self.root}/daemon.json", "--iptables=false",
                "--ip6tables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
                "--storage-driver=vfs", f"--cgroup-parent={self.ns}",
                *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = _netns.popen_in_netns(self.ns, argv, stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=log, preexec_fn=self.enter())
        deadline = time.monotonic() + timeout
        while self.docker("version", check=False, timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise VxdpError(f"dockerd on {self.host} did not come up: {self.log_tail()}")
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop dockerd (it stops its containerd; containers stop too, unless
        ``--live-restore``). SIGKILL leaves the shims and containers running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, n: int = 8) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-n:])
        except OSError:
            return ""

    # -- the docker CLI ---------------------------------------------------------------------------

    def docker(self, *args: str, check: bool = True, timeout: float = 60.0,
               input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://SOCK ARGS`` (the client needs only the socket). ``check``:
        VxdpError with Docker's message unless it exits 0."""
        env = {**os.environ, "DOCKER_CONFIG": f"{self.root}/cli"}
        argv = [docker_cli(), "-H", f"unix://{self.sock}", *args]
        try:
            p = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                               env=env)
        except subprocess.TimeoutExpired:
            raise VxdpError(f"docker {' '.join(args)} on {self.host}: no answer within "
                            f"{timeout:.0f}s") from None
        out = subprocess.CompletedProcess(argv, p.returncode,
                                          p.stdout.decode(errors="replace"),
                                          p.stderr.decode(errors="replace"))
        if check and p.returncode != 0:
            raise VxdpError(f"docker {' '.join(args)} on {self.host}: {out.stderr.strip()}")
        return out

    def import_image(self, name: str = IMAGE) -> None:
        self.docker("import", "-c", 'CMD ["/bin/sh"]', "-", name, input=busybox_rootfs())
        self._images.add(name)

    def run(self, name: str, network: str, *cmd: str, ip: str | None = None,
            mac: str | None = None, extra: Sequence[str] = ()) -> str:
        """``docker run -d --name NAME --network NETWORK IMAGE CMD``. The default command
        sleeps and, unlike a bare ``sleep`` as PID 1, leaves on SIGTERM, so ``docker stop``
        and a dockerd shutdown take no 10 s grace period."""
        argv = ["run", "-d", "--name", name, "--network", network, *extra]
        if ip:
            argv += ["--ip", ip]
        if mac:
            argv += ["--mac-address", mac]
        return self.docker(*argv, IMAGE, *(cmd or SLEEP)).stdout.strip()

    def exec(self, container: str, *cmd: str, check: bool = True,
             timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.docker("exec", container, *cmd, check=check, timeout=timeout)

    def inspect(self, container: str, fmt: str) -> str:
        return self.docker("inspect", "-f", fmt, container).stdout.strip()

    def in_sandbox(self, nsfile: str, argv: Sequence[str], check: bool = True,
                   ) -> subprocess.CompletedProcess[str]:
        """``argv`` in a network namespace only dockerd's mount namespace can see (an
        overlay network's ``EXEC_ROOT/netns/1-<id>``): the mount namespace first, then the
        netns file, in two steps (one ``nsenter --mount --net`` opens the file too early)."""
        full = ["nsenter", f"--mount={self.mnt}", "--", "nsenter", f"--net={nsfile}", "--",
                *argv]
        p = subprocess.run(full, capture_output=True, text=True, timeout=30)
        if check and p.returncode != 0:
            raise VxdpError(f"{' '.join(argv)} in {nsfile}: {p.stderr.strip()}")
        return p

    def overlay_sandbox(self, network: str) -> str:
        """The namespace file of Docker overlay network ``network`` (``1-`` + the first ten
        characters of its ID), where its ``br0`` and ``vxlan0`` live."""
        nid = self.docker("network", "inspect", "-f", "{{.Id}}", network).stdout.strip()
        return f"{self.exec_root}/netns/1-{nid[:10]}"

    # -- teardown ---------------------------------------------------------------------------------

    def clear(self, timeout: float = 60.0) -> None:
        """Remove every container, leave swarm, remove every network: while the plugin runs,
        so that it hears Leave/DeleteEndpoint/ReleaseAddress/DeleteNetwork (without it each
        of those calls costs Docker 15 s of retries)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        ids = self.docker("ps", "-aq", check=False, timeout=timeout).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False, timeout=timeout)
        self.docker("swarm", "leave", "-f", check=False, timeout=timeout)
        self.docker("network", "prune", "-f", check=False, timeout=timeout)

    def close(self) -> None:
        """Remove everything this host made (idempotent; see the module docstring)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        errors: list[str] = []
        for what, step in (("containers", self.clear), ("dockerd", self.stop),
                           ("processes", self._kill_leftovers), ("mounts", self._unmount),
                           ("files", self._remove_files), ("cgroups", self._remove_cgroups)):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                errors.append(f"{what}: {exc}")
        _unregister(self.ns)
        if errors:
            raise VxdpError(f"docker host {self.host} cleanup incomplete: {'; '.join(errors)}")

    def _kill_leftovers(self) -> None:
        """containerd and shims (their argv names the exec root), container processes (by
        cgroup: a SIGKILLed dockerd leaves shim and container running under PID 1), then
        anything still in the mount namespace."""
        _kill_pids(_pids_matching(self.exec_root), grace=2.0)
        _kill_pids(_cgroup_pids(self.ns), grace=2.0)
        _kill_pids(_pids_in_mount_ns(self.mnt), grace=2.0)

    def _unmount(self) -> None:
        for path in (self.mnt, self.root):
            if _libc.umount2(path.encode(), 2) != 0:          # MNT_DETACH
                err = ctypes.get_errno()
                if err not in (errno.EINVAL, errno.ENOENT):
                    raise OSError(err, f"umount {path}: {os.strerror(err)}")

    def _remove_files(self) -> None:
        for path in (self.root, self.data):
            shutil.rmtree(path, ignore_errors=True)
            if os.path.exists(path):
                raise VxdpError(f"{path} could not be removed")

    def _remove_cgroups(self) -> None:
        for top in _cgroup_dirs(self.ns):
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)


# -- helpers ------------------------------------------------------------------------------------

def _pids_matching(text: str) -> list[int]:
    needle = text.encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if needle in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _cgroup_dirs(name: str) -> list[str]:
    """Directories called ``name`` in any cgroup hierarchy (``--cgroup-parent=NAME`` is
    relative: under v1 it can land below the caller's own cgroup)."""
    found = []
    for dirpath, dirs, _files in os.walk("/sys/fs/cgroup"):
        if name in dirs:
            found.append(os.path.join(dirpath, name))
            dirs.remove(name)
    return found


def _cgroup_pids(name: str) -> list[int]:
    pids: set[int] = set()
    for top in _cgroup_dirs(name):
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        pids.update(int(x) for x in f.read().split())
    return sorted(pids)


def _pids_in_mount_ns(handle: str) -> list[int]:
    try:
        target = os.stat(handle)
    except OSError:
        return []
    if target.st_dev != os.stat("/proc/self/ns/mnt").st_dev:
        return []                  # not (or no longer) a namespace file
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/mnt")
            except OSError:
                continue
            if st.st_ino == target.st_ino:
                pids.append(int(entry))
    return pids


def _locked(fn: Callable[[int], Any]) -> Any:
    """``fn(dir_fd)`` under an flock of the shared marker directory (made if missing)."""
    while True:
        os.makedirs(_SHARED, exist_ok=True)
        try:
            fd = os.open(_SHARED, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue                         # removed by the last user meanwhile: again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.isdir(_SHARED) and os.stat(_SHARED).st_ino == os.fstat(fd).st_ino:
                return fn(fd)
        finally:
            os.close(fd)


def _register(name: str) -> None:
    def register(_fd: int) -> None:
        if not os.path.isdir(PLUGINS):
            for d, mark in (("/run/docker", ".made-run-docker"), (PLUGINS, ".made-plugins")):
                if not os.path.isdir(d):
                    os.mkdir(d, 0o755)
                    open(os.path.join(_SHARED, mark), "w").close()
        open(os.path.join(_SHARED, name), "w").close()
    _locked(register)


def _unregister(name: str) -> None:
    def unregister(_fd: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(_SHARED, name))
        if any(not e.startswith(".") for e in os.listdir(_SHARED)):
            return                           # another lab host still uses PLUGINS
        for d, mark in ((PLUGINS, ".made-plugins"), ("/run/docker", ".made-run-docker")):
            marker = os.path.join(_SHARED, mark)
            if os.path.exists(marker):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
                os.unlink(marker)
        os.rmdir(_SHARED)
    _locked(unregister)
