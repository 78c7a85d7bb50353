"""prod's pool and backups across a failover, with real processes (issue #15).

One real HA stack (tests/ha_support.ha_stack: etcd x3, two Patroni nodes, HAProxy)
stands in for the prod hosts' database tier. On top of it:

- "host" PgBouncers on 127.0.0.5 and 127.0.0.6 (one port from tests/ports.py),
  each rendered by the platform's pgbouncer.ini renderer and dialling HAProxy, each
  serving a certificate that names only its own address (as infra/cloud_tls issues
  one per prod host). A libpq multi-host DSN built as the prod stack's pooler_dsn is
  (infra/backends/aws.py: verify-full, connect_timeout) must connect through the
  second when the first is stopped or drops SYNs like a dead EC2 host, and a
  certificate that does not name the dialled address must be refused.
- the backup guard (infra/hostagent/leader_only.py, installed beside patroni_api.py
  as cloud-init and the bundle do) run against each node's own patroni.yml: the
  leader runs the backup command, the replica exits 0 without running it, the roles
  swap with a switchover, and a node whose Patroni is stopped fails loudly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from infra import dsn, hostctl, render, tls
from infra.backends import aws_dsns, tenant_users
from infra.hostagent import leader_only, patroni_api
from infra.hostctl import PgBouncer
from infra.hostctl.foreground import wait_for
from infra.hostctl.proc import service_cmd
from infra.ops import cluster as oc
from tests import ports
from tests.ha_support import HaStack, ha_stack
from tests.support import scratch_dir

POOLERS = ("127.0.0.5", "127.0.0.6")
WRONG = "127.0.0.7"        # serves a certificate naming 127.0.0.6, not itself
BLACKHOLE = "127.0.0.8"    # accepts no connection and answers no SYN


@dataclass
class Pool:
    stack: HaStack
    base: Path
    port: int
    ca_file: str
    bouncers: dict[str, PgBouncer]

    def dsn(self, *hosts: str, db: str | None = None) -> str:
        """As the prod stack's pooler_dsn: every host, verify-full, a per-host timeout."""
        pg = self.stack.cfg.postgres
        return dsn.conninfo(host=",".join(hosts), port=self.port, user=pg.app_role,
                            password=self.stack.passwords["app"], dbname=db or pg.database,
                            sslmode="verify-full", sslrootcert=self.ca_file,
                            connect_timeout=aws_dsns.POOLER_CONNECT_TIMEOUT)


def _bouncer(stack: HaStack, base: Path, host: str, port: int, cert: tls.KeyPair,
             ca_pem: str) -> PgBouncer:
    """PgBouncer on `host`, rendered by the platform, dialling the stack's HAProxy; its
    client-facing certificate is `cert` (server side: the stack's CA, verify-full)."""
    d = hostctl.make_dir(base / host, 0o755)
    hostctl.chown_service(d)
    run = hostctl.make_dir(d / "run", 0o755)
    hostctl.chown_service(run)
    own = render.TlsFiles(cert_file=str(d / "client.crt"), key_file=str(d / "client.key"),
                          ca_file=str(d / "client-ca.crt"))
    hostctl.write_file(Path(own.cert_file), cert.cert_pem, 0o644)
    hostctl.write_file(Path(own.key_file), cert.key_pem, 0o600)
    hostctl.write_file(Path(own.ca_file), ca_pem, 0o644)
    for f in (own.cert_file, own.key_file):
        hostctl.chown_service(Path(f))
    bouncer = PgBouncer(ini_path=d / "pgbouncer.ini", pid_file=d / "pgbouncer.pid",
                        host=host, port=port, log_file=d / "pgbouncer.log")
    paths = render.PoolerPaths(auth_file=str(d / "userlist.txt"), socket_dir=str(run),
                               pid_file=str(bouncer.pid_file), log_file=str(bouncer.log_file))
    hport = stack.cfg.ha.haproxy_port
    targets = render.PoolerTargets(listen_address=host, primary_host="127.0.0.1",
                                   primary_port=hport, replica_hosts=("127.0.0.1",),
                                   replica_port=hport + 1)
    cfg = dataclasses.replace(stack.cfg, pooler=dataclasses.replace(stack.cfg.pooler,
                                                                    port=port))
    ini = render.pgbouncer_ini(cfg, paths, targets, stack.files)
    # The client side is this host's own certificate; the server side stays the stack's CA.
    ini = ini.replace(f"client_tls_cert_file = {stack.files.cert_file}",
                      f"client_tls_cert_file = {own.cert_file}")
    ini = ini.replace(f"client_tls_key_file = {stack.files.key_file}",
                      f"client_tls_key_file = {own.key_file}")
    assert own.cert_file in ini and own.key_file in ini, ini
    pw = stack.passwords
    hostctl.write_file(Path(paths.auth_file), render.userlist_txt(tenant_users.pooler_users(
        stack.cfg, pw["app"], pw["admin"], pw["tenant_admin"])))
    hostctl.write_file(bouncer.ini_path, ini)
    for f in (paths.auth_file, str(bouncer.ini_path)):
        hostctl.chown_service(Path(f))
    bouncer.start()
    return bouncer


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    stack = ha_stack(2)
    base = scratch_dir("pgp-prodpool-")
    bouncers: dict[str, PgBouncer] = {}
    try:
        port = ports.free_run(1, hosts=(*POOLERS, WRONG, BLACKHOLE))
        ca = tls.make_ca("pg-platform prod-pool test CA")
        ca_file = base / "ca.crt"
        hostctl.write_file(ca_file, ca.cert_pem, 0o644)
        for host in POOLERS:   # one certificate per host, naming only that host
            cert = tls.make_server_cert(ca, f"pool {host}", [host])
            bouncers[host] = _bouncer(stack, base, host, port, cert, ca.cert_pem)
        bouncers[WRONG] = _bouncer(stack, base, WRONG, port,
                                   tls.make_server_cert(ca, "wrong", [POOLERS[1]]), ca.cert_pem)
        yield Pool(stack, base, port, str(ca_file), bouncers)
    finally:
        for b in bouncers.values():
            with contextlib.suppress(Exception):
                b.stop()
        stack.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(stack.base, ignore_errors=True)


def _served(dsn_text: str, db_sql: str = "SELECT pg_is_in_recovery()") -> tuple[str, bool]:
    """(the PgBouncer libpq reached, the server's answer) over verify-full."""
    with psycopg.connect(dsn_text, prepare_threshold=None, autocommit=True) as conn:
        row = conn.execute(db_sql).fetchone()
        assert row is not None
        return conn.info.host, bool(row[0])


def test_the_multi_host_dsn_uses_the_first_pooler_while_it_is_up(pool: Pool) -> None:
    assert _served(pool.dsn(*POOLERS)) == (POOLERS[0], False)   # the leader, writable


def test_with_the_first_pooler_stopped_the_dsn_connects_through_the_second(
        pool: Pool) -> None:
    first = pool.bouncers[POOLERS[0]]
    first.stop()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pool.dsn(POOLERS[0]), prepare_threshold=None).close()
        host, in_recovery = _served(pool.dsn(*POOLERS))
        assert (host, in_recovery) == (POOLERS[1], False)
        with psycopg.connect(pool.dsn(*POOLERS), prepare_threshold=None) as conn:
            # A transaction id: refused on a standby ("during recovery"), so this is a write.
            assert conn.execute("SELECT txid_current()").fetchone()
        # The read-only pool is the same DSN with `<database>_ro`: a replica, through .6.
        ro = pool.dsn(*POOLERS, db=f"{pool.stack.cfg.postgres.database}_ro")
        assert _served(ro) == (POOLERS[1], True)
    finally:
        first.start()


def test_a_first_host_that_drops_syns_costs_connect_timeout_not_the_pool(pool: Pool) -> None:
    """A dead EC2 host answers nothing. Here: a listener whose accept queue is full, so the
    kernel drops further SYNs; libpq gives up on it after connect_timeout and moves on."""
    with socket.socket() as hole, socket.socket() as filler:
        hole.bind((BLACKHOLE, pool.port))
        hole.listen(0)
        filler.connect((BLACKHOLE, pool.port))   # fills the queue; nothing accepts it
        probe = socket.socket()
        probe.settimeout(1.0)
        with pytest.raises(OSError), probe:
            probe.connect((BLACKHOLE, pool.port))   # the SYN goes unanswered
        # It is connect_timeout that gives up: libpq's "timeout expired", not the kernel's
        # "Connection timed out" after minutes of SYN retries.
        with pytest.raises(psycopg.OperationalError, match="timeout expired"):
            psycopg.connect(pool.dsn(BLACKHOLE), prepare_threshold=None).close()
        assert _served(pool.dsn(BLACKHOLE, POOLERS[1])) == (POOLERS[1], False)


def test_verify_full_refuses_a_certificate_that_does_not_name_the_dialled_host(
        pool: Pool) -> None:
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(pool.dsn(WRONG), prepare_threshold=None).close()
    # libpq checks each host of the list against its own certificate: the wrong one
    # first, then the right one, connects through the right one.
    assert _served(pool.dsn(WRONG, POOLERS[1])) == (POOLERS[1], False)


# --- the backup guard -------------------------------------------------------------------


def _guard(pool: Pool, node: str, marker: Path) -> subprocess.CompletedProcess[str]:
    """The timer's ExecStart, as the prod unit has it, for `node`'s patroni.yml; the
    "backup" appends the node's name to `marker`, so a run is seen."""
    lib = pool.base / "lib"
    if not lib.exists():   # as on a host: the guard beside patroni_api.py
        hostctl.make_dir(lib, 0o755)
        shutil.copy(leader_only.__file__, lib / "pgp_leader_only.py")
        shutil.copy(patroni_api.__file__, lib / "patroni_api.py")
    argv = ["/usr/bin/python3", str(lib / "pgp_leader_only.py"),
            str(pool.stack.procs[node].config_file), pool.stack.files.ca_file, "--",
            "/bin/sh", "-c", f'echo "$0" >> {marker}', node]
    return subprocess.run(service_cmd(argv), capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def marker(pool: Pool) -> Iterator[Path]:
    d = hostctl.make_dir(pool.base / "marks", 0o755)
    hostctl.chown_service(d)
    path = d / "ran"
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


def _ran(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def test_only_the_leaders_backup_runs_and_the_replicas_exits_0(pool: Pool,
                                                                marker: Path) -> None:
    leader = pool.stack.leader()
    assert leader is not None
    replica = next(n for n in pool.stack.procs if n != leader)
    on_replica = _guard(pool, replica, marker)
    assert on_replica.returncode == 0, on_replica.stderr
    assert "is not the leader" in on_replica.stdout and on_replica.stderr == ""
    assert _ran(marker) == []
    on_leader = _guard(pool, leader, marker)
    assert on_leader.returncode == 0, on_leader.stderr
    assert _ran(marker) == [leader]


def test_after_a_switchover_the_new_leaders_backup_runs_instead(pool: Pool,
                                                                marker: Path) -> None:
    stack = pool.stack
    before = stack.leader()
    assert before is not None
    oc.switchover(stack.any_config, stack.admin_dsn(), stack.cfg.postgres.database,
                  lambda name: stack.proxy.servers_up("primary") == [name],
                  node_dsn=lambda m: stack.node_dsn(m.name, "postgres"))
    wait_for(lambda: stack.leader() not in (None, before), timeout=60,
             what="a new leader after the switchover")
    after = stack.leader()
    assert after is not None and after != before
    for node in stack.procs:
        result = _guard(pool, node, marker)
        assert result.returncode == 0, (node, result.stderr)
    assert _ran(marker) == [after]
    # ...and the pool followed: the second host's PgBouncer reaches the new leader.
    assert _served(pool.dsn(*POOLERS))[1] is False


def test_a_node_whose_patroni_is_down_fails_rather_than_guess(pool: Pool,
                                                              marker: Path) -> None:
    stack = pool.stack
    leader = stack.leader()
    replica = next(n for n in stack.procs if n != leader)
    stack.procs[replica].stop()
    try:
        result = _guard(pool, replica, marker)
        assert result.returncode == leader_only.NO_ANSWER, result
        assert "did not answer GET /primary" in result.stderr
        assert "cannot tell whether this node leads" in result.stderr
        assert _ran(marker) == []
    finally:
        stack.procs[replica].start()
        stack.procs[replica].wait_running(timeout=120)


def _server_dsn(pool: Pool, hosts: list[str], attrs: str) -> str:
    """As the prod stack's primary_dsn / replica_dsns with Patroni (infra/backends/aws_dsns):
    every node, verify-full, the per-host timeout, libpq choosing by role."""
    st = pool.stack
    pg = st.cfg.postgres
    port = {n.port for n in st.nodes}
    assert len(port) == 1
    return dsn.conninfo(host=",".join(hosts), port=port.pop(), user=pg.owner_role,
                        password=st.passwords["owner"], dbname=pg.database,
                        sslmode="verify-full", sslrootcert=st.files.ca_file,
                        connect_timeout=aws_dsns.POOLER_CONNECT_TIMEOUT,
                        target_session_attrs=attrs)


def test_the_direct_dsns_pick_the_leader_and_a_standby_by_role(pool: Pool) -> None:
    st = pool.stack
    lead = st.leader()
    assert lead is not None
    hosts = {n.name: n.host for n in st.nodes}
    leader_first = [hosts[lead], *(h for n, h in hosts.items() if n != lead)]
    replica_first = list(reversed(leader_first))
    # read-write skips a standby listed first; prefer-standby skips the leader.
    assert _served(_server_dsn(pool, replica_first, "read-write")) == (hosts[lead], False)
    host, in_recovery = _served(_server_dsn(pool, leader_first, "prefer-standby"))
    assert in_recovery and host != hosts[lead]
