"""The files the dev and prod stacks ship, checked by the real tools that read them.

cloud-init's own schema validator reads the user-data, `postgres -C` parses the
postgresql.conf the hosts and containers get, pgbouncer starts on the rendered
pgbouncer.ini, bash parses the boot scripts, and psql runs the bootstrap SQL on
a real server. Each check is also shown to fail on a broken file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import config, hostctl
from infra.backends import aws_userdata as ud
from infra.backends import docker_delivery as delivery
from infra.backends import docker_files as dk
from infra.config import DockerSettings
from infra.render.pooler import pooler_users, userlist_txt
from tests import ports
from tests.support import scratch_dir, write_tls
from tests.unit.test_aws_backend import PINS

RAW: dict[str, Any] = {
    "replicas": 2,
    "aws": {"region": "eu-west-1", "vpc_id": "vpc-0123456789abcdef0", "vpc_cidr": "10.0.0.0/16",
            "subnet_ids": ["subnet-0123456789abcdef0"], "allowed_cidrs": ["10.20.0.0/16"],
            "ami": "ami-0123456789abcdef0", "package_versions": PINS},
    "backup": {"s3": {"bucket": "acme-pg-backups"}},
}
APP_PW, POOLER_ADMIN_PW = "app-pw-2", "admin-pw-4"


@pytest.fixture(scope="module")
def prod() -> config.PlatformConfig:
    return config.load(RAW, "prod")


@pytest.fixture(scope="module")
def dev() -> config.PlatformConfig:
    return config.load({"replicas": 2}, "dev")


def _user_data(cfg: config.PlatformConfig, replica: int) -> str:
    host = ud.Host(replica=replica, volume_id="vol-0123456789abcdef0",
                   secret_id="arn:aws:secretsmanager:eu-west-1:123456789012:secret:x",
                   primary_host="10.0.1.10" if replica else "")
    return ud.user_data(cfg, host)


def _cloud_init_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_user_data_passes_cloud_init_schema(prod: config.PlatformConfig,
                                            tmp_path: Path) -> None:
    for replica in (0, 1):
        path = tmp_path / f"user-data-{replica}.yaml"
        path.write_text(_user_data(prod, replica))
        result = _cloud_init_schema(path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Valid cloud-config" in result.stdout
    broken = yaml.safe_load(_user_data(prod, 0))
    broken["write_files"][0]["permision"] = "0644"
    path = tmp_path / "broken.yaml"
    path.write_text("#cloud-config\n" + yaml.safe_dump(broken))
    assert _cloud_init_schema(path).returncode != 0


def _postgres_accepts(conf: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`postgres -C` reads the whole file and rejects unknown settings or bad values."""
    hostctl.write_file(workdir / "postgresql.conf", conf, mode=0o644)
    return subprocess.run(hostctl.service_cmd([
        str(hostctl.bin_dir() / "postgres"), "-D", str(workdir / "data"),
        "-c", f"config_file={workdir / 'postgresql.conf'}", "-C", "max_wal_senders"]),
        capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def workdir() -> Any:
    base = scratch_dir()
    hostctl.Server(data_dir=base / "data", port=ports.free_port()).initdb("pgp_admin", "x-pw")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_postgres_accepts_every_rendered_postgresql_conf(prod: config.PlatformConfig,
                                                         dev: config.PlatformConfig,
                                                         workdir: Path) -> None:
    confs = {
        "aws-primary": ud.host_files(prod, ud.Host(0, "vol-1", "arn"))[
            "/etc/pg-platform/postgresql.conf"],
        "aws-replica": ud.host_files(prod, ud.Host(1, "vol-2", "arn", "10.0.1.10"))[
            "/etc/pg-platform/postgresql.conf"],
        "docker-primary": dk.server_files(dev, dev.docker or DockerSettings(), 0)[
            "/etc/pg-platform/postgresql.conf"],
        "docker-replica": dk.server_files(dev, dev.docker or DockerSettings(), 1)[
            "/etc/pg-platform/postgresql.conf"],
    }
    for name, conf in confs.items():
        result = _postgres_accepts(conf, workdir)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.strip() == str(prod.max_wal_senders)
    bad = _postgres_accepts(confs["aws-primary"] + "shared_bufers = '1GB'\n", workdir)
    assert bad.returncode != 0 and "shared_bufers" in bad.stderr


def _pgbouncer_runs(ini: str, tmp: Path, port: int) -> tuple[bool, str]:
    """Start the real pgbouncer on the file: it was accepted when it listens on its port.

    A file PgBouncer rejects makes it exit before it opens the port.
    """
    (tmp / "pgbouncer.ini").write_text(ini)
    os.chmod(tmp / "pgbouncer.ini", 0o644)
    proc = subprocess.Popen(hostctl.service_cmd(["pgbouncer", str(tmp / "pgbouncer.ini")]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        settled = hostctl.wait_until(
            lambda: "exited" if proc.poll() is not None else
            "listening" if not hostctl.port_free("127.0.0.1", port) else None, timeout=30)
        alive = settled == "listening" and proc.poll() is None
    finally:
        if proc.poll() is None:
            # SIGTERM: PgBouncer's immediate shutdown; runuser passes it on.
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
    return alive, out


def test_pgbouncer_accepts_the_rendered_ini(prod: config.PlatformConfig,
                                            dev: config.PlatformConfig) -> None:
    tmp = scratch_dir("pgp-bouncer-")
    try:
        auth = tmp / "userlist.txt"
        auth.write_text(userlist_txt(pooler_users(prod, APP_PW, POOLER_ADMIN_PW)))
        os.chmod(auth, 0o644)
        port = ports.free_port()
        tls = write_tls(tmp)
        real_tls = {host.cert_file: tls.cert_file for host in (ud.TLS, dk.POOLER_TLS)}
        real_tls.update({host.key_file: tls.key_file for host in (ud.TLS, dk.POOLER_TLS)})
        real_tls.update({host.ca_file: tls.ca_file for host in (ud.TLS, dk.POOLER_TLS)})
        for path in real_tls.values():
            os.chmod(path, 0o644)     # pgbouncer runs as the service user here
        inis = {
            "aws": ud.host_files(prod, ud.Host(0, "vol-1", "arn"), ("10.0.1.11",),
                                 "10.0.1.10")[ud.POOLER_INI],
            "docker": dk.pooler_files(dev, dk.Layout("pgp-dev", 5432, 2, 6432))[dk.POOLER_INI],
        }
        for name, ini in inis.items():
            # Only the auth file's path and the port differ from the shipped file: the
            # hosts' paths do not exist here, and the port must be free.
            text = "\n".join(
                f"auth_file = {auth}" if line.startswith("auth_file =") else
                f"listen_port = {port}" if line.startswith("listen_port =") else
                "unix_socket_dir = " + str(tmp) if line.startswith("unix_socket_dir =") else
                _with_tls_files(line, real_tls) for line in ini.splitlines()) + "\n"
            alive, out = _pgbouncer_runs(text, tmp, port)
            assert alive, f"{name}: {out}"
        alive, out = _pgbouncer_runs(text.replace("pool_mode =", "pool_mood ="), tmp, port)
        assert not alive and "pool_mood" in out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _with_tls_files(line: str, real: dict[str, str]) -> str:
    """The hosts' TLS paths (in their bundles) point at this test's certificate files."""
    for host_path, here in real.items():
        line = line.replace(host_path, here)
    return line


def test_boot_scripts_parse_in_bash(prod: config.PlatformConfig,
                                    dev: config.PlatformConfig) -> None:
    scripts = []
    for replica in (0, 1):
        files = {f["path"]: f["content"]
                 for f in yaml.safe_load(_user_data(prod, replica))["write_files"]}
        scripts.append(files["/usr/local/sbin/pgp-setup"])
        # Debian's python3 (not the venv's) compiles the applier the hosts run.
        compiled = subprocess.run(["/usr/bin/python3", "-c", "import sys; compile("
                                   "sys.stdin.read(), 'pgp_apply', 'exec')"],
                                  input=files[ud.APPLIER],
                                  capture_output=True, text=True, timeout=30)
        assert compiled.returncode == 0, compiled.stderr
        docker_files = dk.server_files(dev, dev.docker or DockerSettings(), replica)
        scripts.append(docker_files["/etc/pg-platform/start.sh"])
    scripts.append(dk.pooler_files(dev, dk.Layout("pgp-dev", 5432, 2, 6432))[dk.PGBOUNCER_CTL])
    for agent in ("apply.py", "watch.py"):    # what a dev container's python3 runs
        compiled = subprocess.run(["/usr/bin/python3", "-c", "import sys; compile("
                                   "sys.stdin.read(), 'agent', 'exec')"],
                                  input=delivery.agent_files()[agent],
                                  capture_output=True, text=True, timeout=30)
        assert compiled.returncode == 0, (agent, compiled.stderr)
    for script in [*scripts, "if then fi\n"]:
        result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True,
                                timeout=30)
        assert (result.returncode == 0) == (script != "if then fi\n"), result.stderr
