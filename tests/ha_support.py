"""Real etcd, Patroni, HAProxy and PgBouncer processes for the HA tests and benchmarks.

Everything runs on loopback addresses and free ports in a scratch directory,
from the same renderers and process control the local backend uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from infra import config, dsn, hostctl, render, roles, tls
from infra.backends import local, local_fence, local_patroni, tenant_users
from infra.backends.local_postgres import DatabaseProvider
from infra.hostctl import PgBouncer, fence
from infra.hostctl.daemon import Daemon
from infra.hostctl.etcd import EtcdCluster, LocalMember
from infra.hostctl.foreground import wait_for
from infra.hostctl.haproxy import HaProxy
from infra.hostctl.patroni import PatroniProcess
from infra.ops import cluster as oc
from infra.render import patroni as render_ha
from tests import ports
from tests.ha_load import DDL, WriteLoad
from tests.support import scratch_dir

ETCD_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def write_tls(base: Path, hosts: tuple[str, ...]) -> render.TlsFiles:
    """A CA and one server certificate naming `hosts`, as infra.tls.TlsFiles writes them."""
    d = hostctl.make_dir(base / "tls", 0o755)
    ca = tls.make_ca("pg-platform test CA")
    server = tls.make_server_cert(ca, "pg-platform test", [*hosts, "localhost"])
    files = render.TlsFiles(cert_file=str(d / "server.crt"), key_file=str(d / "server.key"),
                            ca_file=str(d / "ca.crt"))
    hostctl.write_file(Path(files.ca_file), ca.cert_pem, 0o644)
    hostctl.write_file(Path(files.cert_file), server.cert_pem, 0o644)
    hostctl.write_file(Path(files.key_file), server.key_pem, 0o600)
    return files


def etcd_cluster(cfg: config.PlatformConfig, base: Path, files: render.TlsFiles,
                 client_port: int, peer_port: int) -> EtcdCluster:
    members = render_ha.etcd_members(ETCD_HOSTS, client_port, peer_port)
    cluster = EtcdCluster(tuple(LocalMember(m, base / "etcd" / m.name) for m in members),
                          files)
    cluster.write([render_ha.etcd_conf(cfg, m.member, members, str(m.data_dir), files)
                   for m in cluster.members])
    return cluster


NODE_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def patroni_nodes(cfg: config.PlatformConfig, base: Path, count: int, pg_port: int,
                  rest_port: int, *, pgbackrest_config: str | None = None,
                  ) -> list[render_ha.PatroniNode]:
    out = []
    for i, host in enumerate(NODE_HOSTS[:count], start=1):
        name = f"pg-{i}"
        data = str(base / name)
        out.append(render_ha.PatroniNode(
            name=name, host=host, port=pg_port, restapi_port=rest_port,
            paths=render.HostPaths(data_dir=data, socket_dir=str(base / f"run-{name}"),
                                   pgbackrest_config=pgbackrest_config),
            pgpass=str(base / "patroni" / f"{name}.pgpass"), config_dir=data))
    return out


@dataclass
class HaStack:
    """etcd (3 members), Patroni nodes, HAProxy and PgBouncer, all real processes."""

    base: Path
    cfg: config.PlatformConfig
    files: render.TlsFiles
    etcd: EtcdCluster
    nodes: list[render_ha.PatroniNode]
    procs: dict[str, PatroniProcess]
    proxy: HaProxy
    bouncer: PgBouncer
    passwords: dict[str, str]
    fence_props: dict[str, Any]

    @property
    def fence(self) -> Daemon:
        """The dead-leader fence the local backend runs (infra/backends/local_fence.py)."""
        return local_fence.daemon(self.fence_props)

    def fence_status(self) -> dict[str, Any]:
        """Its last decision and poll count (infra/hostctl/fence.py)."""
        path = Path(self.fence_props["run_dir"]) / fence.STATUS
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc

    def fence_records(self) -> list[dict[str, Any]]:
        """Every delete it did or had refused, oldest first."""
        path = Path(self.fence_props["run_dir"]) / fence.RECORD
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def _dsn(self, host: str, port: int, user: str, password: str, db: str) -> str:
        return dsn.conninfo(host=host, port=port, user=user, password=password, dbname=db,
                            sslmode="verify-full", sslrootcert=self.files.ca_file)

    def node_dsn(self, name: str, db: str | None = None) -> str:
        """Break-glass on one node (the owner is no superuser): checks and CHECKPOINT."""
        n = next(n for n in self.nodes if n.name == name)
        pg = self.cfg.postgres
        return self._dsn(n.host, n.port, roles.BREAK_GLASS, self.passwords["superuser"],
                         db or pg.database)

    def owner_dsn(self, name: str, db: str | None = None) -> str:
        n = next(n for n in self.nodes if n.name == name)
        pg = self.cfg.postgres
        return self._dsn(n.host, n.port, pg.owner_role, self.passwords["owner"],
                         db or pg.database)

    def pooler_dsn(self, db: str | None = None) -> str:
        pg = self.cfg.postgres
        return self._dsn(pg.listen_address, self.cfg.pooler.port, pg.app_role,
                         self.passwords["app"], db or pg.database)

    def admin_dsn(self) -> str:
        return self._dsn(self.cfg.postgres.listen_address, self.cfg.pooler.port,
                         self.cfg.pooler.admin_user, self.passwords["admin"], "pgbouncer")

    @property
    def any_config(self) -> Path:
        """A patroni.yml patronictl can use (every node's names the same cluster)."""
        return next(iter(self.procs.values())).config_file

    def leader(self) -> str | None:
        for name, p in self.procs.items():
            if p.probe("/primary") == 200:
                return name
        return None

    def switchover_under_load(self, clients: int = 4, acks: int = 200
                              ) -> tuple[str, oc.SwitchoverResult, WriteLoad]:
        """`python -m infra cluster switchover`'s sequence under a write load through the
        pooler: (the leader before, the result, the stopped load with its failures)."""
        load = WriteLoad(self.pooler_dsn(), clients=clients).start()
        try:
            load.wait_for_acks(acks)
            before = self.leader()
            assert before is not None
            result = oc.switchover(self.any_config, self.admin_dsn(), self.cfg.postgres.database,
                                   lambda name: self.proxy.servers_up("primary") == [name],
                                   node_dsn=lambda m: self.node_dsn(m.name, "postgres"))
            load.wait_for_acks(acks)
        finally:
            load.stop()
        return before, result, load

    def render_node(self, node: render_ha.PatroniNode) -> str:
        members = render_ha.etcd_members(ETCD_HOSTS, self.cfg.ha.etcd_client_port,
                                         self.cfg.ha.etcd_peer_port)
        return render_ha.patroni_yml(self.cfg, node, members, self.secrets,
                                     timescaledb=False, tls=self.files,
                                     ident_users=local_patroni.ident_users())

    @property
    def secrets(self) -> render_ha.HaSecrets:
        return render_ha.HaSecrets(self.passwords["superuser"], self.passwords["replication"],
                                   self.passwords["restapi"])

    def wait_replicating(self, timeout: float = 60.0) -> None:
        """Every replica streams from the leader (and one is synchronous when asked for)."""
        import psycopg

        def ready() -> bool:
            lead = self.leader()
            if lead is None:
                return False
            try:
                with psycopg.connect(self.node_dsn(lead, "postgres"), connect_timeout=3) as c:
                    rows = c.execute("SELECT application_name, sync_state FROM "
                                     "pg_stat_replication WHERE state = 'streaming'").fetchall()
            except psycopg.Error:
                return False
            running = [n for n, p in self.procs.items()
                       if n != lead and p.daemon.is_running()]
            if len(rows) < len(running):
                return False
            if not self.cfg.ha.synchronous_mode:
                return True
            # Patroni promotes automatically only the standby its /sync key names: until
            # it has confirmed one (a loop after the leader changed), a failover waits.
            from infra.hostctl.patroni import members

            sync = {m["Member"] for m in members(self.any_config) if m["Role"] == "Sync Standby"}
            return any(r[1] == "sync" and r[0] in sync for r in rows)

        wait_for(ready, timeout=timeout, what="every replica streams from the leader",
                   interval=0.25)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.fence.stop()
        with contextlib.suppress(Exception):
            self.bouncer.stop()
        with contextlib.suppress(Exception):
            self.proxy.stop()
        for p in self.procs.values():
            with contextlib.suppress(Exception):
                p.stop()
            pid = p.postmaster_pid()
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        self.etcd.stop()


def validate_config(path: Path) -> None:
    """`patroni --validate-config`: it also checks that etcd answers and the ports are free."""
    import subprocess

    proc = subprocess.run(["/usr/bin/patroni", "--validate-config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"patroni --validate-config {path}: {proc.stdout}{proc.stderr}")


def ha_stack(count: int = 3, *, synchronous: str = "off", ttl: int = 20, loop_wait: int = 5,
             retry_timeout: int = 5, max_connections: int = 50, fence: bool = True) -> HaStack:
    """Start a whole HA cluster in a scratch directory and wait until every node runs;
    `fence=False` leaves out the dead-leader fence (to measure the lease path alone)."""
    base = scratch_dir("pgp-ha-")
    p = ports.ha_ports(ETCD_HOSTS)
    cport, pport, pgport, rport, hport, bport = (p.etcd_client, p.etcd_peer, p.postgres,
                                                 p.restapi, p.haproxy, p.pooler)
    settings: dict[str, Any] = {
        "state_dir": str(base),
        "postgres": {"max_connections": max_connections},
        "pooler": {"port": bport, "default_pool_size": 10, "max_client_conn": 200,
                   "query_wait_timeout": 60, "server_login_retry": 0.25},
        "ha": {"manager": "patroni", "synchronous": synchronous, "ttl": ttl,
               "loop_wait": loop_wait, "retry_timeout": retry_timeout,
               "etcd_client_port": cport, "etcd_peer_port": pport, "restapi_port": rport,
               "haproxy_port": hport},
    }
    cfg = config.load(settings, "hatest")
    pw = {k: secrets.token_urlsafe(24) for k in ("superuser", "owner", "app", "replication",
                                                 "admin", "restapi", "monitor",
                                                 "tenant_admin", "tenant_key")}
    files = write_tls(base, ("127.0.0.1", *ETCD_HOSTS))
    etcd = etcd_cluster(cfg, base, files, cport, pport)
    nodes = patroni_nodes(cfg, base, count, pgport, rport)
    pdir = hostctl.make_dir(base / "patroni", 0o700)
    procs = {n.name: PatroniProcess(n.name, n.host, n.restapi_port, pdir / f"{n.name}.yml",
                                    Path(n.paths.data_dir), files) for n in nodes}
    run = hostctl.make_dir(base / "run", 0o755)
    proxy = HaProxy(config_file=base / "haproxy" / "haproxy.cfg",
                    stats_socket=base / "haproxy" / "stats.sock", host="127.0.0.1", port=hport)
    pooler_dir = hostctl.make_dir(base / "pgbouncer", 0o700)
    bouncer = PgBouncer(ini_path=pooler_dir / "pgbouncer.ini",
                        pid_file=pooler_dir / "pgbouncer.pid", host="127.0.0.1", port=bport,
                        log_file=pooler_dir / "pgbouncer.log")
    fence_props = local_fence.fence_props(
        prefix=f"{render_ha.NAMESPACE.rstrip('/')}/pg-platform-{cfg.stack}",
        endpoints=[m.member.client_url for m in etcd.members], tls=files,
        members=[(n.name, str(procs[n.name].config_file), n.paths.data_dir) for n in nodes],
        run_dir=str(base / "fence"))
    stack = HaStack(base, cfg, files, etcd, nodes, procs, proxy, bouncer, pw, fence_props)
    try:
        etcd.start()
        for n in nodes:
            hostctl.make_dir(Path(n.paths.socket_dir), 0o755)
            procs[n.name].write_config(stack.render_node(n))
            validate_config(procs[n.name].config_file)
        first = procs[nodes[0].name]
        first.start()
        first.wait_running()
        DatabaseProvider._apply({
            **local.database_props(cfg, pw["superuser"], pw["app"], pw["replication"],
                                   owner_pw=pw["owner"], monitor_pw=pw["monitor"],
                                   tenant_admin_pw=pw["tenant_admin"]),
            "host": nodes[0].host, "port": nodes[0].port})
        for n in nodes[1:]:
            procs[n.name].start()
        for n in nodes[1:]:
            procs[n.name].wait_running(timeout=120)
        if fence:
            local_fence.start(fence_props)
        proxy.write_config(render_ha.haproxy_cfg(nodes, render_ha.ProxyTargets(
            "127.0.0.1", hport, str(proxy.stats_socket)), files))
        proxy.check_config()
        proxy.start()
        proxy.wait_checked()
        wait_for(lambda: proxy.servers_up("primary") == [nodes[0].name], timeout=15,
                   what="HAProxy sees the leader")
        paths = render.PoolerPaths(auth_file=str(pooler_dir / "userlist.txt"),
                                   socket_dir=str(run), pid_file=str(bouncer.pid_file),
                                   log_file=str(bouncer.log_file))
        targets = render.PoolerTargets(listen_address="127.0.0.1", primary_host="127.0.0.1",
                                       primary_port=hport, replica_hosts=("127.0.0.1",),
                                       replica_port=hport + 1)
        hostctl.write_file(Path(paths.auth_file), render.userlist_txt(
            tenant_users.pooler_users(cfg, pw["app"], pw["admin"], pw["tenant_admin"])))
        hostctl.write_file(bouncer.ini_path, render.pgbouncer_ini(cfg, paths, targets, files))
        bouncer.start()
    except BaseException:
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def ledger_stack() -> Iterator[HaStack]:
    """3 nodes, `synchronous: on`, the write load's ledger table made and granted to the
    app role, every replica streaming: the cluster the failover tests share."""
    stack = ha_stack(3, synchronous="on")
    try:
        with psycopg.connect(stack.owner_dsn("pg-1")) as conn:
            conn.execute(DDL)
            conn.execute("GRANT SELECT, INSERT ON ha_ledger TO app")
        stack.wait_replicating()
        yield stack
    finally:
        stack.stop()
