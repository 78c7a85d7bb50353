"""The Debian bookworm root file system every host-tier host boots from, cached.

Built once by debootstrap (minbase plus the packages below) under `.tools/hosts/`,
in a directory named by a digest of everything that goes into it, so a changed
package list or TimescaleDB build makes a new one and an unchanged one is reused.

Stand-ins, each because the machine has no internet (docs/testing.md):
- PGDG's and Timescale's packages come from Debian: bookworm main carries
  PostgreSQL 15.18 (the host's own version; bookworm-security's 15.20 is never
  used), PostGIS, PgBouncer and pgBackRest, all pre-installed here. The user-data's
  `apt-get install` of them then finds them installed, and its apt lines point at
  the tier's signed, empty stand-in repositories (tests/hosts/world.py).
- TimescaleDB is not packaged by Debian: the host's own 2.28.3 build (made by
  scripts/timescaledb for the same 15.18 server) is wrapped into a
  `timescaledb-2-postgresql-15` package and installed.
- Debian's own apt sources are emptied after the build: every package the
  bootstrap names is already installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PG_MAJOR = 15
# What the Debian cloud image and the prod user-data need, plus sshd and sudo (the
# cloud image's access path) and the database packages the bootstrap installs.
PACKAGES = (
    "ca-certificates", "curl", "gnupg", "python3-boto3", "xfsprogs", "nvme-cli", "cron",
    "procps", "iproute2", "systemd", "openssh-server", "sudo",
    f"postgresql-{PG_MAJOR}", f"postgresql-{PG_MAJOR}-postgis-3", "pgbouncer", "pgbackrest",
    # The exporters day2's bootstrap installs (issue 17 point 5).
    "prometheus-postgres-exporter", "prometheus-pgbouncer-exporter",
    # What the prod user-data installs with ha.manager patroni (docs/ha.md): Debian's
    # Patroni 3.0.2, etcd 3.4 and HAProxy 2.6; none of them moves PostgreSQL off 15.18.
    "patroni", "etcd-server", "haproxy",
)
TIMESCALE_PACKAGE = f"timescaledb-2-postgresql-{PG_MAJOR}"
_BUILD_VERSION = "1"   # bump when the customisation below changes


def host_timescaledb() -> list[Path]:
    """The host's TimescaleDB files for PostgreSQL 15 (library and extension scripts)."""
    lib = Path(f"/usr/lib/postgresql/{PG_MAJOR}/lib")
    ext = Path(f"/usr/share/postgresql/{PG_MAJOR}/extension")
    found = sorted([*lib.glob("timescaledb*.so"), *ext.glob("timescaledb*")])
    if not any(p.name == "timescaledb.so" for p in found):
        raise RuntimeError(f"no TimescaleDB in {lib}: run scripts/bootstrap first (it builds "
                           "2.28.3 for the installed PostgreSQL)")
    return found


def cache_key() -> str:
    h = hashlib.sha256()
    h.update(f"{_BUILD_VERSION} {SUITE} {MIRROR} {' '.join(PACKAGES)} "
             f"{host_postgres_version()}\n".encode())
    for path in host_timescaledb():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _run(argv: list[str], **kw: object) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} … exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout)[-1500:]}")


def _timescaledb_deb(work: Path) -> Path:
    """The host's build as a Debian package (so dpkg knows it, as with Timescale's)."""
    pkg = work / "tsdeb"
    version = "2.28.3"
    for path in host_timescaledb():
        dest = pkg / path.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
        m = re.fullmatch(r"timescaledb-(\d[\d.]*)\.so", path.name)
        if m:
            version = m.group(1)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: {TIMESCALE_PACKAGE}\nVersion: {version}~pgplatform1\nArchitecture: amd64\n"
        f"Depends: postgresql-{PG_MAJOR}\nMaintainer: pg-platform host tier <none@invalid>\n"
        "Description: TimescaleDB built by scripts/timescaledb (stand-in for Timescale's)\n")
    deb = work / f"{TIMESCALE_PACKAGE}.deb"
    _run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(deb)])
    return deb


def _customise(root: Path, work: Path) -> None:
    deb = _timescaledb_deb(work)
    shutil.copy(deb, root / "tmp" / deb.name)
    chroot = ["chroot", str(root)]
    _run([*chroot, "dpkg", "-i", f"/tmp/{deb.name}"])
    (root / "tmp" / deb.name).unlink()
    # Debian made a `main` cluster on install; the prod bootstrap makes its own on EBS.
    _run([*chroot, "pg_dropcluster", str(PG_MAJOR), "main"])
    (root / "etc/apt/sources.list").write_text(
        "# pg-platform host tier: every package is pre-installed (tests/hosts/rootfs.py)\n")
    _run([*chroot, "apt-get", "clean"])
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()          # each host makes its own at first boot, as cloud-init does


def installed(root: Path) -> dict[str, str]:
    """Every package installed in the rootfs, with its version (dpkg's own database)."""
    out = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                          "-f=${Package} ${Version}\n"], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def host_postgres_version() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", f"postgresql-{PG_MAJOR}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def check_postgres_matches(root: Path) -> None:
    """The rootfs's server must be the host's: TimescaleDB was built for that one."""
    inside = installed(root).get(f"postgresql-{PG_MAJOR}", "")
    host = host_postgres_version()
    if inside != host:
        raise RuntimeError(f"the rootfs has postgresql-{PG_MAJOR} {inside or 'missing'}, the "
                           f"machine {host}: TimescaleDB is built for the machine's; bookworm "
                           "main must carry the same version (never upgrade the machine's)")


def ensure(base: Path) -> tuple[Path, float]:
    """The cached root file system (made when missing) and the seconds it took here."""
    started = time.monotonic()
    key = cache_key()
    root = base / f"rootfs-{key}"
    if (root / ".complete").exists():
        return root, time.monotonic() - started
    base.mkdir(parents=True, exist_ok=True)
    build = base / f"rootfs-{key}.build"
    if build.exists():
        shutil.rmtree(build)
    build.mkdir()
    logger.info("building the bookworm root file system %s (debootstrap, about 3 min)", key)
    target = build / "root"
    # In its own mount namespace: the /proc and /sys debootstrap mounts die with it.
    _run(["unshare", "--mount", "--propagation", "private", "--", "debootstrap",
          "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(target), MIRROR],
         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    check_postgres_matches(target)
    _customise(target, build)
    (target / ".complete").write_text(f"{key}\n")
    for old in base.glob("rootfs-*"):
        if old.is_dir() and old.name != build.name and old.name != root.name:
            shutil.rmtree(old, ignore_errors=True)   # a previous package list's cache
    target.rename(root)
    shutil.rmtree(build)
    return root, time.monotonic() - started
