"""The host tier's checks, each on the booted hosts' real processes (tests/hosts/test_boot.py).

Each returns a one-line summary for the step's log line, and raises naming what
it saw when the platform does not do what the step claims.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import dill
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.hosts import program
from tests.hosts.hostns import Host
from tests.hosts.tier import ROOT, Tier

PROBE = "host_tier_probe"


@contextlib.contextmanager
def connect(dsn: str, **extra: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(make_conninfo(dsn, **extra), autocommit=True, connect_timeout=10,
                         prepare_threshold=None) as conn:
        yield conn


def owner_at(tier: Tier, dsn: str) -> str:
    """`dsn`'s server as the owner role of primary_dsn."""
    owner = conninfo_to_dict(tier.outputs["primary_dsn"])
    return make_conninfo(dsn, user=str(owner["user"]), password=str(owner["password"]))


def wait_until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
            if found:
                return found
            last = repr(found)
        except (psycopg.Error, RuntimeError) as exc:
            last = str(exc).strip()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f}s; last: {last}")
        time.sleep(0.5)


def pooled_read_write_login(tier: Tier) -> str:
    dsn = tier.outputs["pooler_dsn"]
    with connect(dsn) as conn:
        user, recovery = conn.execute(
            "SELECT current_user, pg_is_in_recovery()").fetchone()  # type: ignore[misc]
        xid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
        ssl = conn.pgconn.ssl_in_use
    assert recovery is False, "the pooler's read-write database is in recovery"
    host = conninfo_to_dict(dsn)
    return (f"{user}@{host['host']}:{host['port']} through PgBouncer, read-write "
            f"(txid {xid}), client TLS {'on' if ssl else 'off'}")


def psql_as_postgres(host: Host, sql: str) -> str:
    """SQL on the host's socket as the break-glass superuser (peer), where it exists."""
    return host.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-h",
                     "/var/run/postgresql", "-d", "postgres", "-c", sql]).stdout.strip()


def streaming(tier: Tier, note: str) -> str:
    primary = tier.outputs["primary_dsn"]
    replica = owner_at(tier, tier.outputs["replica_dsns"][0])
    with connect(primary) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {PROBE} (id bigserial PRIMARY KEY, "
                     "note text NOT NULL, at timestamptz NOT NULL DEFAULT now())")
        conn.execute(f"INSERT INTO {PROBE} (note) VALUES (%s)", (note,))
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
    started = time.monotonic()

    def replayed() -> bool:
        with connect(replica) as conn:
            row = conn.execute(f"SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= "
                               f"%s::pg_lsn, (SELECT count(*) FROM {PROBE} WHERE note = %s)",
                               (lsn, note)).fetchone()
        return bool(row and row[0] and row[1] and row[2] == 1)

    wait_until(f"the replica replaying {lsn}", replayed, 30)
    took = time.monotonic() - started
    senders = psql_as_postgres(tier.host("primary"),
                               "SELECT application_name || ' ' || state || ' ' || "
                               "coalesce(s.ssl::text, '?') FROM pg_stat_replication r "
                               "LEFT JOIN pg_stat_ssl s USING (pid)")
    assert "streaming" in senders, f"pg_stat_replication on the primary: {senders!r}"
    return f"row replayed on the replica in {took:.2f}s (lsn {lsn}); sender: {senders}"


def _pgbackrest(tier: Tier, *args: str) -> str:
    entry = next(h for h in tier.outputs["testinfra_hosts"] if h.get("pgbackrest_config"))
    stanza = tier.rendered.cfg.backup.stanza  # type: ignore[union-attr]
    return tier.host("primary").run(
        ["runuser", "-u", "postgres", "--", "pgbackrest",
         f"--config={entry['pgbackrest_config']}", f"--stanza={stanza}", *args],
        timeout=600).stdout


def backup_to_s3(tier: Tier) -> str:
    """The first boot's full backup, then the schedule's incr unit, started by hand."""
    before = json.loads(_pgbackrest(tier, "--output=json", "info"))[0]["backup"]
    assert any(b["type"] == "full" for b in before), f"no full backup after boot: {before}"
    # The schedule's incr, as its timer would start it: the unit's own ExecStart and User=.
    unit = "pg-platform-backup-incr.service"
    text = tier.host("primary").path(f"/etc/systemd/system/{unit}").read_text()
    user = next(ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith("User="))
    started = time.monotonic()
    tier.host("primary").run(["systemctl", "start", unit], timeout=600)
    took = time.monotonic() - started
    after = json.loads(_pgbackrest(tier, "--output=json", "info"))[0]["backup"]
    assert len(after) == len(before) + 1 and after[-1]["type"] == "incr", after
    assert tier.world is not None and tier.rendered is not None
    prefix = tier.rendered.cfg.backup.s3.path.strip("/")  # type: ignore[union-attr]
    listing = tier.world.client("s3").list_objects_v2(Bucket=tier.rendered.bucket,
                                                      Prefix=prefix)
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert any(k.endswith("backup.info") for k in keys), keys[:10]
    return (f"{len(before)} backup(s) from first boot (full {before[0]['label']}); the "
            f"schedule's incr ran as {user} in {took:.1f}s -> {after[-1]['label']}; "
            f"{len(keys)} objects in s3://{tier.rendered.bucket}/{prefix}")


def testinfra_over_ssh(tier: Tier) -> tuple[str, dict[str, str]]:
    """pytest tests/infra against the hosts, the way users run it against prod."""
    snapshot = tier.stack_snapshot()
    junit = tier.run_dir / "testinfra.xml"
    log = tier.run_dir / "testinfra.log"
    argv = [sys.executable, "-m", "pytest", "tests/infra", "-p", "no:cacheprovider",
            "--stack-json", str(snapshot), f"--ssh-config={tier.ssh_config}", "--sudo",
            f"--junitxml={junit}", "-q", "-rA"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    with log.open("w") as out:
        subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                       timeout=900, check=False)
    results: dict[str, str] = {}
    for case in ET.parse(junit).iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = f"{child.tag}: {(child.get('message') or '').splitlines()[0][:160]}"
            elif child.tag == "skipped":
                outcome = "skipped"
        results[name] = outcome
    passed = sum(1 for v in results.values() if v == "passed")
    return (f"{passed}/{len(results)} passed over ssh://admin@ with sudo in "
            f"{time.monotonic() - started:.0f}s (log {log})"), results


def pids(host: Host) -> dict[str, int]:
    """Main PIDs of the host's long-running services (the shim's records)."""
    found = {}
    for record in host.path("/run/pgp-shim").glob("*.service.pid"):
        pid = int(record.read_text().split()[0])
        if (host.path(f"/proc/{pid}")).exists():
            found[record.name.removesuffix(".pid")] = pid
    return found


def push_and_apply(tier: Tier, new: program.Rendered) -> dict[str, str]:
    """Store each host's new bundle (what `pulumi up` does), let each host pull it
    (pg-platform-apply.service, the timer's unit), and wait as `pulumi up` waits."""
    assert tier.world is not None
    for plan in new.hosts:
        tier.world.put_secret(plan.secret_id, plan.bundle)
    timers = {}
    for host in tier.hosts:
        state = host.run(["systemctl", "is-active", "pg-platform-apply.timer"], check=False)
        timers[host.name] = state.stdout.strip()
        host.run(["systemctl", "start", "pg-platform-apply.service"], timeout=600)
    converge_wait(tier, new)
    return timers


def converge_wait(tier: Tier, rendered: program.Rendered, timeout: float = 120) -> None:
    """The program's HostsConverged resource, run as the engine would (its pickled
    provider's create), with boto3 pointed at moto."""
    assert rendered.converged_props is not None and tier.world is not None
    provider = dill.loads(base64.b64decode(rendered.converged_provider))
    env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{tier.world.moto_port}",
           "AWS_ACCESS_KEY_ID": "harness", "AWS_SECRET_ACCESS_KEY": "harness"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        provider.create({**rendered.converged_props, "timeout_seconds": timeout})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def show(dsn: str, name: str) -> str:
    with connect(dsn) as conn:
        return str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]


def pooler_setting(dsn: str, name: str) -> str:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10,
                         cursor_factory=psycopg.ClientCursor) as console:
        for row in console.execute("SHOW CONFIG").fetchall():
            if row[0] == name:
                return str(row[1])
    raise AssertionError(f"PgBouncer's SHOW CONFIG has no {name}")


def login_fails(dsn: str) -> str:
    try:
        with connect(dsn):
            pass
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[-1]
    raise AssertionError("a login with the old password still works")


