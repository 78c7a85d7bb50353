"""Rendered files are checked by the installed postgres, pgbouncer and pgbackrest.

Each tool accepts the files the local backend renders for a stack with
replicas, and refuses a broken copy with its own message; `pulumi preview`
of a throw-away stack stops on a setting only the server can judge (a time
zone that does not exist), before any resource is made.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra import config
from infra.backends import docker_files, local, local_patroni, rendered_checks
from infra.backends.local_layout import layout
from infra.config import PlatformConfig
from infra.errors import ConfigError
from infra.hostctl import filecheck
from tests.engine import ThrowawayStack
from tests.support import scratch_dir


@pytest.fixture(scope="module")
def cfg() -> PlatformConfig:
    return config.load({"replicas": 2, "state_dir": str(scratch_dir("pgp-fc-") / "state"),
                        "postgres": {"port": 61432}}, "checks")


def _our_checks() -> list[int]:
    """Check processes (runuser or pgbouncer) this test process started, still alive."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"pgp-check-" in cmdline and ppid == os.getpid():
            found.append(int(stat.parent.name))
    return found


def _files(cfg: PlatformConfig) -> dict[str, dict[str, str]]:
    return local.plain_files(cfg, layout(cfg).tls)


def _one(cfg: PlatformConfig, node: str, suffix: str) -> tuple[str, str]:
    return next((p, t) for p, t in _files(cfg)[node].items() if p.endswith(suffix))


def test_the_rendered_files_pass_their_tools(cfg: PlatformConfig) -> None:
    files = _files(cfg)
    assert set(files) == {"primary", "replica-1", "replica-2", "pooler"}
    for node, texts in files.items():
        rendered_checks.check_files(cfg, node, texts)
    # Nothing is left running: the pgbouncer check stops what it started.
    assert _our_checks() == []


@pytest.mark.parametrize(("line", "words"), [
    ("work_mem = '3TB'", 'invalid value for parameter "work_mem"'),
    ("wrok_mem = '4MB'", 'unrecognized configuration parameter "wrok_mem"'),
    ("timezone = 'Mars/Olympus'", 'invalid value for parameter "TimeZone"'),
    ("shared_buffers = '100TB'", 'invalid value for parameter "shared_buffers"'),
])
def test_postgres_refuses_a_broken_postgresql_conf(cfg: PlatformConfig, line: str,
                                                   words: str) -> None:
    path, text = _one(cfg, "primary", "postgresql.conf")
    with pytest.raises(ConfigError) as err:
        filecheck.check_postgresql_conf(text + line + "\n", 15, f"primary ({path})")
    message = str(err.value)
    assert "postgresql.conf rendered for primary" in message and words in message, message


@pytest.mark.parametrize(("line", "words"), [
    ("pool_mode = sometimes", 'invalid value "sometimes" for parameter pool_mode'),
    ("auth_typo = trust", "unknown parameter: pgbouncer/auth_typo"),
    ("max_client_conn = lots", 'invalid value "lots" for parameter max_client_conn'),
])
def test_pgbouncer_refuses_a_broken_ini(cfg: PlatformConfig, line: str, words: str) -> None:
    path, text = _one(cfg, "pooler", "pgbouncer.ini")
    with pytest.raises(ConfigError) as err:
        filecheck.check_pgbouncer_ini(text + line + "\n", f"pooler ({path})")
    assert words in str(err.value) and "refused by pgbouncer" in str(err.value)


@pytest.mark.parametrize(("line", "words"), [
    ("compress-type=zzz", "'zzz' is not allowed for 'compress-type' option"),
    ("repo1-retention-full=many", "'many' is not valid for 'repo1-retention-full' option"),
    ("repo1-bogus=1", "invalid option 'repo1-bogus'"),
])
def test_pgbackrest_refuses_a_broken_conf(cfg: PlatformConfig, line: str, words: str) -> None:
    path, text = _one(cfg, "primary", "pgbackrest.conf")
    name = line.split("=")[0]
    kept = [ln for ln in text.splitlines() if not ln.startswith(f"{name}=")]
    broken = "\n".join(kept).replace("[global]", f"[global]\n{line}", 1) + "\n"
    with pytest.raises(ConfigError) as err:
        filecheck.check_pgbackrest_conf(broken, cfg.backup.stanza, f"primary ({path})")
    assert words in str(err.value) and "refused by pgbackrest" in str(err.value)


@pytest.mark.engine
def test_preview_stops_on_a_value_only_the_server_refuses() -> None:
    stack = ThrowawayStack("servercheck", {"postgres": {"parameters": {
        "log_timezone": "Mars/Olympus"}}})
    try:
        stack.init()
        proc = stack.preview(check=False)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "postgresql.conf rendered for primary" in text, text[-3000:]
        assert 'invalid value for parameter "log_timezone"' in text
        assert "Traceback" not in text
        assert not list(stack.state_dir.glob("*")), "a resource was made before the refusal"
    finally:
        stack.remove()


def test_a_pooler_ini_without_a_log_file_is_checked_too(tmp_path: Path) -> None:
    """docker's pgbouncer.ini names no logfile and its own pidfile: the scratch copy names
    one of each, in the scratch directory."""
    dev = config.load({"replicas": 1}, "dev")
    text = docker_files.pooler_files(dev, docker_files.Layout(
        prefix="p", port=5432, replicas=1, pooler_port=6432))[docker_files.POOLER_INI]
    assert "logfile" not in text and "pidfile = /tmp/pgbouncer.pid" in text
    scratch = filecheck.pgbouncer_scratch_ini(text, tmp_path)
    keys = [ln.split("=")[0].strip() for ln in scratch.splitlines() if "=" in ln
            and not ln.startswith(";")]
    for key in ("pidfile", "logfile", "listen_addr", "unix_socket_dir", "auth_file"):
        assert keys.count(key) == 1, (key, scratch)
    assert f"pidfile = {tmp_path / 'pgbouncer.pid'}" in scratch
    filecheck.check_pgbouncer_ini(text, "dev pooler")
    with pytest.raises(ConfigError, match="unknown parameter: pgbouncer/auth_typo"):
        filecheck.check_pgbouncer_ini(text + "auth_typo = trust\n", "dev pooler")
    assert _our_checks() == []


def test_the_patroni_paths_pooler_and_backup_files_pass_their_tools() -> None:
    """ha.manager patroni: PgBouncer's ini (pooling through HAProxy, with the auth_user) and
    the pgbackrest.conf that names every node are checked as on the other path."""
    ha = config.load({"replicas": 2, "state_dir": str(scratch_dir("pgp-fcha-") / "state"),
                      "postgres": {"port": 61532}, "ha": {"manager": "patroni"}}, "checks")
    pooler = local_patroni.pooler_props(ha, "", layout(ha).tls)
    backup = local_patroni.backup_props(ha)
    assert "pg3-path" in backup["pgbackrest_conf"] and "auth_user" in pooler["pgbouncer_ini"]
    rendered_checks.check_files(ha, "pooler", {pooler["ini_path"]: pooler["pgbouncer_ini"]})
    rendered_checks.check_files(ha, "backup", {backup["config_path"]: backup["pgbackrest_conf"]})
    with pytest.raises(ConfigError, match="unknown parameter: pgbouncer/auth_typo"):
        rendered_checks.check_files(ha, "pooler", {pooler["ini_path"]:
                                                   pooler["pgbouncer_ini"] + "auth_typo = x\n"})
    assert _our_checks() == []
