"""One host-tier host: a copy of the cached root file system, its own mount, PID, UTS and
network namespaces, a loop device as its EBS volume, and its IMDSv2 emulator.

`start` runs `unshare` with a small set-up script as PID 1 of the new namespaces;
the script mounts an overlay (the cached rootfs below, this host's own directory
above: a fresh "instance" costs nothing), /proc, /sys, a private /dev holding only
the basic nodes, a devpts instance and the data volume's loop device (with its
`/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_<id>` link, as on Nitro), then
execs the chroot's reaper (guest/init) as PID 1. Every mount lives in the host's
mount namespace, so it disappears with the host's processes, whatever killed them.

The host's only network is a veth on the tier's bridge (no default route): it
reaches the other hosts, the bridge's two service addresses (tests/hosts/world.py)
and its own IMDS emulator on 169.254.169.254 inside its namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.hosts.cleanup import Ledger, start_time

GUEST = Path(__file__).resolve().parent / "guest"
IMDS = Path(__file__).resolve().parent / "imds.py"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SETUP = r"""
set -eu
root=$1 lower=$2 upper=$3 work=$4 loopdev=$5 volid=$6 name=$7
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=0755,size=8m dev "$root/dev"
for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  set -- $n; mknod -m 0666 "$root/dev/$1" c "$2" "$3"
done
mkdir -p "$root/dev/pts" "$root/dev/shm" "$root/dev/disk/by-id"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"; ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
# The EBS volume: its node and the name Nitro instances give it.
major=$((0x$(stat -c %t "$loopdev"))); minor=$((0x$(stat -c %T "$loopdev")))
dev=$(basename "$loopdev")
mknod -m 0660 "$root/dev/$dev" b "$major" "$minor"
ln -s "../../$dev" "$root/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$(echo "$volid" | tr -d -)"
mount -t tmpfs -o mode=0755 run "$root/run"
hostname "$name"
exec chroot "$root" /usr/bin/python3 /usr/local/lib/pgp-harness/init
"""


@dataclass
class Volume:
    """A sparse file on a loop device: the EBS volume that outlives instances."""

    path: Path
    volume_id: str
    device: str = ""

    def attach(self, ledger: Ledger, size: str = "3G") -> None:
        subprocess.run(["truncate", "-s", size, str(self.path)], check=True)
        out = subprocess.run(["losetup", "-f", "--show", str(self.path)], check=True,
                             capture_output=True, text=True)
        self.device = out.stdout.strip()
        ledger.add("loop", device=self.device, backing=str(self.path))


@dataclass
class Network:
    """The bridge: .1 serves AWS, .2 the package sites; hosts are .11 and up."""

    bridge: str
    prefix: str          # e.g. "10.213.7"

    @property
    def subnet(self) -> str:
        return f"{self.prefix}.0/24"

    def address(self, n: int) -> str:
        return f"{self.prefix}.{n}"

    def create(self, ledger: Ledger) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        ledger.add("link", name=self.bridge)
        for n in (1, 2):
            _ip("addr", "add", f"{self.address(n)}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


@dataclass
class Host:
    name: str
    index: int           # 0 primary, 1.. replicas; also picks the veth name
    ip: str
    instance_id: str
    rootfs: Path
    run_dir: Path
    volume: Volume
    network: Network
    ledger: Ledger
    run_id: str
    pid: int = 0         # PID 1 of the host's namespaces, as the machine sees it
    generation: int = 0  # bumped by each start: a rebuilt host gets a fresh copy
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def top(self) -> Path:
        return self.run_dir / f"{self.name}.{self.generation}"

    def path(self, inside: str) -> Path:
        """A path inside the running host, through its root (/proc/<pid>/root)."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def start(self) -> None:
        self.generation += 1
        for d in ("upper", "work", "merged"):
            (self.top / d).mkdir(parents=True)
        self._install_guest()
        setup = self.top / "host-setup.sh"   # per host: parallel boots would race one file
        setup.write_text(SETUP)
        unshare = subprocess.Popen(
            ["unshare", "--mount", "--net", "--pid", "--uts", "--fork", "--kill-child",
             "--propagation", "private", "--", "/bin/sh", str(setup),
             str(self.top / "merged"), str(self.rootfs), str(self.top / "upper"),
             str(self.top / "work"), self.volume.device, self.volume.volume_id, self.name],
            stdin=subprocess.DEVNULL, stdout=(self.top / "setup.log").open("wb"),
            stderr=subprocess.STDOUT)
        self.ledger.process(unshare.pid, f"{self.name} unshare")
        self.procs.append(unshare)
        self.pid = self._child(unshare)
        self.ledger.process(self.pid, f"{self.name} init")
        deadline = time.monotonic() + 30
        while not self.path("/run/pgp-init.ready").exists():
            if unshare.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: the host did not start: "
                                   f"{(self.top / 'setup.log').read_text()[-1500:]}")
            time.sleep(0.05)
        self._network()
        self._imds()

    def _child(self, unshare: subprocess.Popen[bytes]) -> int:
        deadline = time.monotonic() + 10
        children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
        while time.monotonic() < deadline:
            try:
                kids = children.read_text().split()
            except OSError:
                kids = []
            if kids:
                return int(kids[0])
            if unshare.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: unshare made no namespace: "
                           f"{(self.top / 'setup.log').read_text()[-1500:]}")

    def _network(self) -> None:
        outer = self.veth
        inner = f"pgp{self.run_id}g{self.index}"
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        self.ledger.add("link", name=outer)
        _ip("link", "set", outer, "master", self.network.bridge, "up")
        _ip("link", "set", inner, "netns", str(self.pid))
        for args in (["link", "set", "lo", "up"], ["link", "set", inner, "name", "eth0"],
                     ["addr", "add", f"{self.ip}/24", "dev", "eth0"],
                     ["link", "set", "eth0", "up"],
                     ["addr", "add", "169.254.169.254/32", "dev", "lo"]):
            proc = subprocess.run(["nsenter", "-t", str(self.pid), "-n", "ip", *args],
                                  capture_output=True, text=True, check=False)
            if proc.returncode:
                raise RuntimeError(f"{self.name}: ip {' '.join(args)}: {proc.stderr.strip()}")

    def _imds(self) -> None:
        """The emulator in the host's network and PID namespaces: it dies with the host."""
        log = (self.top / "imds.log").open("ab")
        proc = subprocess.Popen(
            ["nsenter", "-t", str(self.pid), "-n", "-p", "--", sys.executable, str(IMDS),
             "--instance-id", self.instance_id, "--ip", self.ip,
             "--role", "pg-platform-prod-instance"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.ledger.process(proc.pid, f"{self.name} imds")
        self.procs.append(proc)
        deadline = time.monotonic() + 15
        while self.run(["bash", "-c", "exec 3<>/dev/tcp/169.254.169.254/80"],
                       check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: the IMDS emulator did not start: "
                                   f"{(self.top / 'imds.log').read_text()[-800:]}")
            time.sleep(0.1)

    def run(self, argv: list[str], *, check: bool = True, input: str | None = None,
            timeout: float = 300, user: str = "",
            log: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv inside the host (all its namespaces and its root), clean environment."""
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        full = ["nsenter", "-t", str(self.pid), "-m", "-n", "-p", "-u", "-r", "-w", "--",
                "/usr/bin/env", "-i", f"PATH={GUEST_PATH}", "LANG=C.UTF-8", "HOME=/root",
                *argv]
        if log is not None:
            with log.open("a") as out:
                proc = subprocess.run(full, input=input, stdout=out, stderr=subprocess.STDOUT,
                                      text=True, timeout=timeout, check=False)
            proc.stdout = log.read_text()[-3000:]
        else:
            proc = subprocess.run(full, input=input, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        if check and proc.returncode:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} exited {proc.returncode}: "
                               f"{((proc.stdout or '') + (proc.stderr or ''))[-3000:]}")
        return proc

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        os.chmod(target, mode)

    def _install_guest(self) -> None:
        """The harness's stand-ins (PID 1, the systemctl shim, the cloud-init stand-in),
        placed in the copy's upper layer before it is mounted."""
        for name, dest in (("init", "usr/local/lib/pgp-harness/init"),
                           ("cloud-init", "usr/local/lib/pgp-harness/cloud-init"),
                           ("systemctl", "usr/local/sbin/systemctl"),
                           ("shim_units.py", "usr/local/lib/pgp-harness/shim_units.py")):
            target = self.top / "upper" / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(GUEST / name, target)
            os.chmod(target, 0o755)

    @property
    def veth(self) -> str:
        return f"pgp{self.run_id}h{self.index}"

    def crash(self) -> None:
        """The host dies: its link goes dark first (no RST, no goodbye to its peers, as
        when an instance loses power), then every process of its PID namespace but PID 1
        gets SIGKILL at once, IMDS emulator included. The mounts and the volume stay,
        so `revive` is the same instance coming back, not a rebuilt one."""
        _ip("link", "set", self.veth, "down")
        deadline = time.monotonic() + 30
        # Again until none is left: a process may fork between the listing and its kill.
        while rest := [p for p in self.processes() if p != self.pid]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: processes survived SIGKILL: {rest}")
            for pid in rest:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def processes(self) -> list[int]:
        """The PIDs (as the machine sees them) of every process in the host's namespace."""
        mine = os.readlink(f"/proc/{self.pid}/ns/pid")
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "ns" / "pid") == mine:
                        found.append(int(entry.name))
                except OSError:
                    continue   # gone meanwhile
        return found

    def revive(self) -> None:
        """After `crash`: the link back and the IMDS emulator (the cloud's, not the
        host's); the host's own services are the caller's to start, as a boot would."""
        _ip("link", "set", self.veth, "up")
        self._imds()

    def stop(self) -> None:
        """Power off: every process of the host ends and its mounts go with them."""
        if self.pid and start_time(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        subprocess.run(["ip", "link", "del", self.veth],
                       capture_output=True, check=False)
        self.pid = 0
