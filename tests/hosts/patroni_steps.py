"""Checks for the host tier's Patroni cluster (tests/hosts/test_patroni_boot.py).

Everything here reads the booted hosts' real processes: Patroni's REST API and
etcd's v3 gateway (with the host's own certificate, as Patroni dials it), the
PostgreSQL nodes over verified TLS, the shim's records of each host's units.
The write load (`Writer`) counts a write only once its COMMIT returned, so "no
acknowledged commit lost" is checked against what a client was told.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra.hostagent import patroni_api
from tests.hosts import steps
from tests.hosts.hostns import Host
from tests.hosts.tier import Tier

logger = logging.getLogger("host-tier")
TABLE = "host_tier_ha_writes"
POOLER_UNIT = "pgbouncer.service"
# A client that notices a dead server within seconds, as an application should be set up
# against an HA cluster: libpq's TCP timeouts (the host goes dark, nothing sends RST).
FAST_FAIL = {"connect_timeout": "3", "keepalives": "1", "keepalives_idle": "1",
             "keepalives_interval": "1", "keepalives_count": "2", "tcp_user_timeout": "3000"}


def ca_file(tier: Tier) -> str:
    return str(conninfo_to_dict(tier.outputs["primary_dsn"])["sslrootcert"])


def owner_on(tier: Tier, host: Host) -> str:
    """The owner role, straight to `host`'s PostgreSQL (its certificate names its address),
    whatever its role (primary_dsn itself lists every host and asks for read-write)."""
    return make_conninfo(tier.outputs["primary_dsn"], host=host.ip, target_session_attrs="any",
                         **FAST_FAIL)


def cluster(tier: Tier, among: list[Host]) -> dict[str, Any]:
    """GET /cluster from the first of `among` whose Patroni answers."""
    assert tier.rendered is not None
    port = tier.rendered.cfg.ha.restapi_port
    for h in among:
        status, body = patroni_api.get(f"https://{h.ip}:{port}", "/cluster", ca_file(tier))
        if status == 200 and body:
            return body
    raise RuntimeError(f"no Patroni REST API answers on {[h.name for h in among]}")


def members(tier: Tier, among: list[Host]) -> dict[str, dict[str, Any]]:
    """Patroni's members by host name (`primary`, `replica-N`), matched by address."""
    by_ip = {h.ip: h.name for h in tier.hosts}
    return {by_ip.get(str(m.get("host")), str(m.get("name"))): m
            for m in cluster(tier, among).get("members", [])}


def leader(tier: Tier, among: list[Host]) -> Host:
    """The host of `among` whose node leads, by the cluster's view and by its own (GET
    /primary answers 200 only on a running leader). Both, because a dead leader's member
    key outlives it in etcd by up to `ttl` and still says leader and running."""
    assert tier.rendered is not None
    port = tier.rendered.cfg.ha.restapi_port
    ms = members(tier, among)
    for h in among:
        m = ms.get(h.name, {})
        if m.get("role") == "leader" and m.get("state") == "running" and patroni_api.get(
                f"https://{h.ip}:{port}", "/primary", ca_file(tier))[0] == 200:
            return h
    raise RuntimeError(f"no running leader among {[h.name for h in among]}: {ms}")


def healthy_replicas(tier: Tier, among: list[Host], lead: Host) -> list[str]:
    """Members that replicate on the leader's timeline, as Patroni reports them."""
    ms = members(tier, among)
    timeline = ms[lead.name].get("timeline")
    return sorted(n for n, m in ms.items() if n != lead.name
                  and m.get("state") in patroni_api.RUNNING and m.get("timeline") == timeline)


def etcd(tier: Tier, host: Host, path: str, target: Host | None = None) -> dict[str, Any]:
    """etcd's v3 JSON gateway at `target` (default `host`), called from inside `host` with
    its own certificate: etcd asks every client for one (client-cert-auth)."""
    assert tier.rendered is not None
    tls = "/etc/pg-platform/tls"
    url = f"https://{(target or host).ip}:{tier.rendered.cfg.ha.etcd_client_port}{path}"
    argv = ["curl", "-fsS", "--max-time", "5", "--cacert", f"{tls}/ca.crt", "--cert",
            f"{tls}/server.crt", "--key", f"{tls}/server.key", url]
    if path.startswith("/v3/"):
        argv += ["-X", "POST", "-d", "{}"]
    out: dict[str, Any] = json.loads(host.run(argv, timeout=30).stdout)
    return out


def etcd_quorum(tier: Tier, alive: list[Host]) -> str:
    """Every live member is healthy and lists the same three members."""
    listed = etcd(tier, alive[0], "/v3/cluster/member/list")["members"]
    names = sorted(str(m.get("name")) for m in listed)
    assert len(names) == 3, f"etcd lists {names}"
    health = {h.name: etcd(tier, alive[0], "/health", target=h).get("health") for h in alive}
    assert all(v == "true" for v in health.values()), health
    return f"etcd members {names}, healthy on {sorted(health)}"


def senders(leader_host: Host) -> list[tuple[str, str, str]]:
    """pg_stat_replication on the leader: (application_name, state, sync_state)."""
    out = steps.psql_as_postgres(leader_host, "SELECT application_name, state, sync_state "
                                 "FROM pg_stat_replication ORDER BY 1")
    return [tuple(line.split("|")) for line in out.splitlines() if line]  # type: ignore[misc]


def sync_senders(leader_host: Host) -> list[tuple[str, str, str]] | None:
    """The senders, once every replica streams and one of them is synchronous."""
    found = senders(leader_host)
    streaming = len(found) == 2 and all(state == "streaming" for _, state, _ in found)
    return found if streaming and any(sync == "sync" for _, _, sync in found) else None


def make_table(tier: Tier, lead: Host) -> None:
    """The write load's table, owned by the owner role; the app role may insert through
    the pooler (client-chosen keys: no sequence to grant)."""
    assert tier.rendered is not None
    app = tier.rendered.cfg.postgres.app_role
    with steps.connect(owner_on(tier, lead)) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (n bigint PRIMARY KEY, "
                     "via text NOT NULL, at timestamptz NOT NULL DEFAULT now())")
        conn.execute(f"GRANT SELECT, INSERT ON {TABLE} TO {app}")


def write_once(dsn: str, n: int, via: str) -> None:
    with steps.connect(dsn) as conn:
        conn.execute(f"INSERT INTO {TABLE} (n, via) VALUES (%s, %s)", (n, via))


def rows(dsn: str) -> set[int]:
    with steps.connect(dsn) as conn:
        return {int(r[0]) for r in conn.execute(f"SELECT n FROM {TABLE}").fetchall()}


def surviving_write_paths(tier: Tier, survivors: list[Host]) -> dict[str, str]:
    """Where a client may write once the leader host is gone: the new leader, direct,
    `primary_dsn` as output, and PgBouncer on every surviving host whose bundle runs it
    (with Patroni, every host's: found from the bundles, not assumed)."""
    lead = leader(tier, survivors)
    paths = {f"{lead.name} direct (the new leader)": owner_on(tier, lead),
             # The output as it is: every host, read-write; libpq skips the dead one.
             "primary_dsn": make_conninfo(tier.outputs["primary_dsn"], **FAST_FAIL)}
    for h in survivors:
        if POOLER_UNIT in (json.loads(tier.plan(h).bundle).get("enable") or []):
            paths[f"PgBouncer on {h.name}"] = make_conninfo(tier.outputs["pooler_dsn"],
                                                            host=h.ip, **FAST_FAIL)
    return paths


def pooler_hosts(tier: Tier) -> list[str]:
    return [h.name for h in tier.hosts
            if POOLER_UNIT in (json.loads(tier.plan(h).bundle).get("enable") or [])]


@dataclass
class Writer:
    """One client writing a row every `pause` seconds to whatever `target()` says leads
    (re-asked after each failure), each in its own autocommit transaction. `acked` are
    the rows whose COMMIT returned: with synchronous replication, none may be lost."""

    target: Callable[[], str]
    pause: float = 0.05
    acked: list[int] = field(default_factory=list)
    failures: int = 0
    longest_gap: float = 0.0
    last_error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ha-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the writer did not stop"

    def acked_since(self, count: int) -> int:
        return len(self.acked) - count

    def _run(self) -> None:
        n, conn, last_ack = 0, None, time.monotonic()
        while not self._stop.is_set():
            n += 1
            try:
                if conn is None:
                    conn = psycopg.connect(self.target(), autocommit=True,
                                           prepare_threshold=None)
                conn.execute(f"INSERT INTO {TABLE} (n, via) VALUES (%s, 'writer')", (n,))
                self.acked.append(n)
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - last_ack)
                last_ack = now
            except (psycopg.Error, RuntimeError) as exc:
                self.failures += 1
                self.last_error = str(exc).strip().splitlines()[0] if str(exc) else repr(exc)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.5)
                continue
            self._stop.wait(self.pause)
        if conn is not None:
            conn.close()


def start_times(tier: Tier, hosts: list[Host]) -> dict[str, float]:
    """pg_postmaster_start_time() of each node, as epoch seconds."""
    out = {}
    for h in hosts:
        with steps.connect(owner_on(tier, h)) as conn:
            row: Any = conn.execute(
                "SELECT extract(epoch FROM pg_postmaster_start_time())").fetchone()
            out[h.name] = float(row[0])
    return out


def boot_units(tier: Tier, host: Host) -> list[str]:
    """What a boot of `host` starts: the units enabled on it, in its bundle's order (etcd,
    Patroni, HAProxy, PgBouncer...), then the others; pg-platform-setup.service is among
    them and skips itself, as on a real boot (ConditionPathExists)."""
    enabled = sorted(p.name for p in host.path("/run/pgp-shim/enabled").iterdir())
    order = [u for u in json.loads(tier.plan(host).bundle).get("enable") or []
             if u in enabled]
    return [*order, *[u for u in enabled if u not in order]]


def restart_services(tier: Tier, host: Host) -> list[str]:
    """After `Host.crash` and `Host.revive`: start the host's units as its boot would."""
    host.run(["rm", "-f", "/run/nologin"])
    # cron as the harness's first boot starts it (tier.BOOT_UNITS), then the enabled ones.
    units = ["cron.service", *[u for u in boot_units(tier, host) if u != "cron.service"]]
    for unit in units:
        host.run(["systemctl", "start", "--no-block", unit], timeout=120)
    return units


# What Patroni logged when it checked its own node at `localhost` over verify-full
# ("Can not fetch local timeline and lsn from replication connection", then this).
SELF_CHECK_FAILED = 'does not match host name "localhost"'


def rewind_outcome(log: str) -> str:
    """What Patroni's log says of pg_rewind: "not needed", or its exit code line."""
    lines = log.splitlines()
    ran = [i for i, ln in enumerate(lines) if "running pg_rewind from" in ln]
    if not ran:
        return "not needed"
    done = [ln for ln in lines[ran[-1]:] if "pg_rewind exit code=" in ln]
    return done[0].split("INFO: ", 1)[-1].strip() if done else "started, no exit code logged"


def patroni_log(host: Host) -> str:
    log = host.path("/run/pgp-shim/pg-platform-patroni.service.log")
    return log.read_text(errors="replace") if log.exists() else ""
