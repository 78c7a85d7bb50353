"""What the host tier's hosts reach beyond themselves: AWS and the package repositories.

- **AWS**: moto in server mode (S3 and Secrets Manager, on a loopback port) behind
  socat's `OPENSSL-LISTEN` on the bridge's first address, port 443. pgBackRest 2.45
  needs HTTPS and moto's own TLS closes without close_notify, which pgBackRest
  refuses; socat terminates TLS properly. The certificate names the regional S3,
  the bucket's virtual host and Secrets Manager endpoints.
- **The internet's package sites**: `www.postgresql.org`, `apt.postgresql.org` and
  `packagecloud.io` on the bridge's second address, port 443, again socat in
  front of a plain file server. They serve a signing key made for the run (the
  bootstrap's `curl` of PGDG's and Timescale's keys) and signed, empty apt
  repositories at the paths the bootstrap's apt lines name, so `apt-get update`
  verifies real signatures; the packages themselves are pre-installed
  (tests/hosts/rootfs.py).

Both listen only on the bridge the tier made; hosts have no other route.
The run's CA signs both certificates and is installed into every host's trust store.
"""

from __future__ import annotations

import email.utils
import hashlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from infra import hostctl, tls
from tests import ports
from tests.hosts.cleanup import Ledger

PGDG_KEY_PATH = "media/keys/ACCC4CF8.asc"
TIMESCALE_KEY_PATH = "timescale/timescaledb/gpgkey"
REPOS = {"pub/repos/apt": "{codename}-pgdg", "timescale/timescaledb/debian": "{codename}"}
MIRROR_NAMES = ("www.postgresql.org", "apt.postgresql.org", "packagecloud.io")
CODENAME = "bookworm"


def aws_names(region: str, bucket: str) -> list[str]:
    s3 = f"s3.{region}.amazonaws.com"
    return [s3, f"{bucket}.{s3}", f"secretsmanager.{region}.amazonaws.com"]


@dataclass
class World:
    run_dir: Path
    ledger: Ledger
    aws_ip: str
    mirror_ip: str
    region: str
    bucket: str
    moto_port: int = 0

    @property
    def ca_file(self) -> Path:
        return self.run_dir / "world-ca.crt"

    def hosts_file_lines(self) -> str:
        return (f"{self.aws_ip} {' '.join(aws_names(self.region, self.bucket))}\n"
                f"{self.mirror_ip} {' '.join(MIRROR_NAMES)}\n")

    def _spawn(self, argv: list[str], what: str) -> subprocess.Popen[bytes]:
        log = (self.run_dir / f"{what}.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.ledger.process(proc.pid, what)
        return proc

    def _tls_front(self, name: str, ip: str, backend_port: int, names: list[str],
                   ca: tls.KeyPair) -> None:
        pair = tls.make_server_cert(ca, names[0], names)
        pem = self.run_dir / f"{name}.pem"
        pem.touch(mode=0o600)
        pem.write_text(pair.cert_pem + pair.key_pem)
        self._spawn(["socat", f"OPENSSL-LISTEN:443,bind={ip},reuseaddr,fork,cert={pem},"
                     "verify=0", f"TCP:127.0.0.1:{backend_port}"], f"socat-{name}")

    def start(self) -> None:
        ca = tls.make_ca("pg-platform host tier world CA")
        self.ca_file.write_text(ca.cert_pem)
        self.moto_port = ports.free_port()
        self._spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                     "-p", str(self.moto_port)], "moto")
        docroot = self.run_dir / "mirror"
        _mirror(docroot, self.run_dir / "gnupg")
        http_port = ports.free_port()
        self._spawn([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                     "--directory", str(docroot), str(http_port)], "mirror")
        self._tls_front("aws", self.aws_ip, self.moto_port,
                        aws_names(self.region, self.bucket), ca)
        self._tls_front("packages", self.mirror_ip, http_port, list(MIRROR_NAMES), ca)
        for port in (self.moto_port, http_port):
            _wait_port("127.0.0.1", port)
        for ip in (self.aws_ip, self.mirror_ip):
            _wait_port(ip, 443)

    def client(self, service: str) -> Any:
        """A boto3 client for moto, straight to its loopback port (the harness's side)."""
        return boto3.client(service, region_name=self.region,
                            endpoint_url=f"http://127.0.0.1:{self.moto_port}",
                            aws_access_key_id="harness", aws_secret_access_key="harness")

    def create_bucket(self) -> None:
        """What the prod program's BucketV2 makes before any host boots."""
        self.client("s3").create_bucket(
            Bucket=self.bucket,
            CreateBucketConfiguration={"LocationConstraint": self.region})

    def put_secret(self, name: str, value: str) -> None:
        """The host's bundle as the program's Secret and SecretVersion would store it."""
        sm = self.client("secretsmanager")
        try:
            sm.create_secret(Name=name, SecretString=value)
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=name, SecretString=value)


def _wait_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while hostctl.port_free(host, port) if host == "127.0.0.1" else not _connects(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.1)


def _connects(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", *args],
                          input=stdin, capture_output=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"gpg {args[0]} exited {proc.returncode}: {proc.stderr[-600:]!r}")
    return proc.stdout


def _mirror(root: Path, home: Path) -> None:
    """The key and the signed, empty repositories the bootstrap's apt lines name."""
    home.mkdir(mode=0o700)
    _gpg(home, "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
         "pg-platform host tier repositories <none@invalid>", "ed25519", "sign", "never")
    key = _gpg(home, "--armor", "--export")
    for path in (PGDG_KEY_PATH, TIMESCALE_KEY_PATH):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(key)
    empty = hashlib.sha256(b"").hexdigest()
    for base, suite in REPOS.items():
        dist = root / base / "dists" / suite.format(codename=CODENAME)
        (dist / "main/binary-amd64").mkdir(parents=True)
        (dist / "main/binary-amd64/Packages").write_bytes(b"")
        release = (f"Origin: pg-platform host tier\nLabel: stand-in\n"
                   f"Suite: {dist.name}\nCodename: {dist.name}\n"
                   f"Date: {email.utils.formatdate(usegmt=True)}\n"
                   "Architectures: amd64\nComponents: main\n"
                   f"SHA256:\n {empty} 0 main/binary-amd64/Packages\n")
        (dist / "Release").write_text(release)
        (dist / "InRelease").write_bytes(_gpg(home, "--clearsign", stdin=release.encode()))
