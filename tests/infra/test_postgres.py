"""PostgreSQL on the primary and the replicas: where it listens, what it runs, who may log in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from infra import config
from tests.infra.conftest import connect, remote, stats_dsn, superuser_rows
from tests.infra.inventory import Host

# ss -ltnpH: "LISTEN 0 244 127.0.0.1:5432 0.0.0.0:* users:(("postgres",pid=10,fd=6))"
_SS_LINE = re.compile(r"^\S+\s+\d+\s+\d+\s+(\S+)\s+\S+\s+users:\((.*)\)\s*$")


def postmaster_pid(host: Host) -> int:
    text = remote(host).file(f"{host.data_dir}/postmaster.pid").content_string
    return int(text.splitlines()[0])


def listening(host: Host, pid: int) -> set[str]:
    """Every TCP address:port the process `pid` listens on, from `ss` on the host."""
    out = remote(host).check_output("ss -ltnpH")
    found = set()
    for line in out.splitlines():
        m = _SS_LINE.match(line.strip())
        if m and re.search(rf"pid={pid},", m.group(2)):
            found.add(m.group(1))
    return found


def expected_address(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    return f"{params['host']}:{params['port']}"


def postgres_hosts(primary: Host, replica_hosts: list[Host],
                   server_dsns: dict[str, str]) -> list[tuple[Host, str]]:
    return [(h, server_dsns[h.name]) for h in (primary, *replica_hosts)]


def configured_addresses(dsn: str, ca_file: Path) -> set[str]:
    """address:port for each entry of the server's own listen_addresses."""
    with connect(dsn, ca_file) as conn:
        row = conn.execute("SELECT current_setting('listen_addresses'), "
                           "current_setting('port')").fetchone()
    assert row is not None
    wildcard = {"*": "0.0.0.0", "0.0.0.0": "0.0.0.0"}
    return {f"{wildcard.get(a.strip(), a.strip())}:{row[1]}" for a in str(row[0]).split(",")}


def test_postgres_listens_where_configured_and_nowhere_else(
        cfg: config.PlatformConfig, primary: Host, replica_hosts: list[Host],
        server_dsns: dict[str, str], outputs: dict[str, Any], ca_file: Path) -> None:
    """Each postmaster listens on exactly its listen_addresses; on local that is the
    address its inventory entry names (prod binds 0.0.0.0, as aws_userdata renders it)."""
    for host, dsn in postgres_hosts(primary, replica_hosts, server_dsns):
        want = configured_addresses(dsn, ca_file)
        assert listening(host, postmaster_pid(host)) == want, host.name
        if cfg.backend == "local":
            assert want == {expected_address(dsn)} == {host.address}, host.name
    if cfg.backend == "local":
        # Clients dial the primary itself, or with Patroni HAProxy's read-write port.
        front = cfg.ha.haproxy_port if cfg.ha.manager == "patroni" else cfg.postgres.port
        assert expected_address(outputs["primary_dsn"]) == \
            f"{cfg.postgres.listen_address}:{front}"


def test_version_and_extensions_are_as_configured(cfg: config.PlatformConfig,
                                                  outputs: dict[str, Any],
                                                  ca_file: Path) -> None:
    # SHOW shared_preload_libraries needs pg_read_all_settings (pg_monitor has it).
    with connect(stats_dsn(outputs), ca_file) as conn:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        created = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]  # type: ignore[index]
    assert version // 10000 == cfg.postgres.version
    assert {"pgcrypto", "pg_stat_statements"} <= created
    # Detected, not assumed: each optional extension is there exactly when the host has it.
    for optional in ("postgis", "timescaledb"):
        assert (optional in created) == (optional in available), optional
    assert ("timescaledb" in preload.split(",")) == ("timescaledb" in available)


def hba_path(host: Host) -> str:
    """The host's pg_hba.conf: the rendered one the inventory names (prod keeps it in
    /etc/pg-platform), else the data directory's (a Patroni node's, which Patroni writes
    from patroni.yml's pg_hba)."""
    named = [p for p in host.files if p.endswith("/pg_hba.conf")]
    return named[0] if named else f"{host.data_dir}/pg_hba.conf"


def test_pg_hba_has_no_trust_and_only_scram(cfg: config.PlatformConfig, primary: Host,
                                            replica_hosts: list[Host],
                                            outputs: dict[str, Any], ca_file: Path) -> None:
    for host in [primary, *replica_hosts]:
        f = remote(host).file(hba_path(host))
        assert f.is_file, f"{host.name}: no {hba_path(host)}"
        text = f.content_string
        entries = [line.split() for line in text.splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
        assert entries, f"{host.name}: pg_hba.conf has no entries"
        network = [e for e in entries if e[0] != "local"]
        assert network and all(e[-1] == "scram-sha-256" for e in network), (host.name, entries)
        # The socket: the bootstrap superuser by peer only (break-glass, docs/security.md).
        assert all(e[2] == "postgres" and e[3] == "peer" for e in entries if e[0] == "local")
        assert not any("trust" in e for e in entries)
    # What the server loaded; pg_hba_file_rules is the superuser's (break-glass) to read.
    rules = superuser_rows(primary, cfg, outputs, ca_file,
                           "SELECT type, auth_method, error FROM pg_hba_file_rules")
    assert rules and not any(r["error"] for r in rules)
    assert {r["auth_method"] for r in rules if r["type"] != "local"} == {"scram-sha-256"}
    assert {r["auth_method"] for r in rules if r["type"] == "local"} <= {"peer"}


def test_password_encryption_is_scram(cfg: config.PlatformConfig, primary: Host,
                                      outputs: dict[str, Any], ca_file: Path) -> None:
    with connect(outputs["primary_dsn"], ca_file) as conn:
        assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
    bad = superuser_rows(primary, cfg, outputs, ca_file,
                         "SELECT rolname FROM pg_authid WHERE rolpassword IS NOT NULL "
                         "AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'")
    assert bad == []


def test_timescaledb_events_policies_and_telemetry_where_present(outputs: dict[str, Any],
                                                                 ca_file: Path) -> None:
    """With TimescaleDB: events is a hypertable with its three policy jobs, none failing,
    and no telemetry; without it, the same tables and views (the fallback)."""
    with connect(outputs["primary_dsn"], ca_file) as conn:
        present = conn.execute("SELECT count(*) FROM pg_extension "
                               "WHERE extname = 'timescaledb'").fetchone()[0]  # type: ignore[index]
        views = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relname IN ('events', 'events_hourly', 'tenant_events', 'tenant_events_hourly')")}
        assert views == {"events", "events_hourly", "tenant_events", "tenant_events_hourly"}
        if not present:
            return
        procs = {r[0] for r in conn.execute(
            "SELECT proc_name FROM timescaledb_information.jobs j "
            "WHERE hypertable_name IN ('events', 'events_hourly')")}
        failed = conn.execute("SELECT count(*) FROM timescaledb_information.job_stats "
                              "WHERE last_run_status = 'Failed'").fetchone()[0]  # type: ignore[index]
        telemetry = conn.execute("SHOW timescaledb.telemetry_level").fetchone()[0]  # type: ignore[index]
    assert procs == {"policy_compression", "policy_retention",
                     "policy_refresh_continuous_aggregate"}
    assert failed == 0 and telemetry == "off"
