"""P1ha's shell floor: the server work of a cold `up` with `ha.manager: patroni`, by hand.

bench/baseline_up.sh is the floor of the hand-supervised platform: initdb,
pg_ctl and pg_basebackup. A Patroni stack does work that script never does and
that no orchestration can take away: three etcd members must elect a leader,
Patroni must win the initialize key, run initdb and its own bootstrap before it
takes the leader key, and each replica's Patroni must find that leader and clone
it. Measured against the plain floor, the platform is charged for Patroni
itself. bench/baseline_up_ha.sh does the same server work as a Patroni `up`, as a
plain script a person would write: start the three etcd members and wait until
they are healthy, start every Patroni node at once (Patroni's own way to build a
cluster: one bootstraps, the others clone it), wait for a leader, make the roles
on its socket, stanza-create and a full backup, HAProxy (until it routes to the
leader), PgBouncer, psql -f of all the SQL through HAProxy, and last wait until
both replicas stream (a script gets their cloning in the background for free).
Every file it uses is rendered here, before the clock starts, by the renderers
the platform uses (infra/render/patroni.py through local_patroni's props): the
same etcd.conf.yml, patroni.yml, haproxy.cfg, pgbackrest.conf and pgbouncer.ini.
So `P1ha / HA floor` is the platform's own overhead, the goal's ratio; `P1ha /
plain floor` is shown as context (what Patroni costs on top of that).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from bench import cold_up, common
from bench.cold_up import passwords, platform_sql, setup_sql, write_tls
from bench.common import Figure, Platform
from infra import config, hostctl, roles
from infra.backends import local, local_patroni, tenant_users
from infra.backends.local_ha_layout import etcd, ha_layout, nodes, tls_hosts
from infra.backends.local_layout import layout
from infra.backup import stanza
from infra.hostctl import standby
from infra.hostctl.patroni import PatroniProcess
from infra.hostctl.pgbackrest import PgBackRest
from infra.render import patroni as render_ha
from tests.engine import ThrowawayStack
from tests.infra.throwaway import patroni_settings
from tests.support import scratch_dir

SCRIPT = common.ROOT / "bench" / "baseline_up_ha.sh"


def ha_settings(ha: dict[str, Any]) -> dict[str, Any]:
    """P1ha's stack settings from tests.infra.throwaway.patroni_settings() (free ports)."""
    return {"replicas": 2, "tenants": common.TENANTS, "ha": ha["ha"],
            "postgres": {"port": ha["postgres"]["port"]},
            "pooler": {"port": ha["pooler"]["port"], "server_login_retry": 0.25}}


def _env_file(cfg: config.PlatformConfig, tls: Any) -> str:
    """What the script needs to know (no secret): addresses, ports and file paths."""
    lay, ha = layout(cfg), ha_layout(cfg)
    ns = nodes(cfg)
    values: dict[str, str | list[str]] = {
        "PGPORT": str(cfg.postgres.port),
        "CA": tls.ca_file, "CERT": tls.cert_file, "KEY": tls.key_file,
        "ETCD_CONFS": [str(ha.etcd_dir / m.name / "etcd.conf.yml") for m in etcd(cfg)],
        "ETCD_URLS": [m.client_url for m in etcd(cfg)],
        "PATRONI_YMLS": [str(ha.config_file(n.name)) for n in ns],
        "REST_URLS": [f"https://{n.host}:{n.restapi_port}" for n in ns],
        "SOCKETS": [n.paths.socket_dir for n in ns],
        "HAPROXY_CFG": str(ha.haproxy_dir / "haproxy.cfg"),
        "HAPROXY_SOCK": str(ha.haproxy_dir / "stats.sock"),
        "HAPROXY_HOST": cfg.postgres.listen_address, "HAPROXY_PORT": str(cfg.ha.haproxy_port),
        "PGBOUNCER_INI": str(lay.pooler_dir / "pgbouncer.ini"),
        "PGBR_CONF": str(lay.pgbackrest_conf), "STANZA": cfg.backup.stanza,
        "OWNER": cfg.postgres.owner_role, "BREAK_GLASS": roles.BREAK_GLASS,
        "DATABASE": cfg.postgres.database,
    }
    out = []
    for k, v in values.items():
        out.append(f"{k}=({' '.join(shlex.quote(x) for x in v)})" if isinstance(v, list)
                   else f"{k}={shlex.quote(v)}")
    return "\n".join(out) + "\n"


def prepare(work: Path, settings: dict[str, Any]) -> config.PlatformConfig:
    """Render every file the script starts a server with; nothing here is timed."""
    cfg = config.load({"state_dir": str(work), **settings}, "bench")
    pg, lay = cfg.postgres, layout(cfg)
    pw = passwords()
    tls = lay.tls
    write_tls(tls, tls_hosts(cfg))
    conf = hostctl.make_dir(work / "conf", 0o700)
    timescaledb = local.timescaledb_installed(pg.version)
    ha_secrets = render_ha.HaSecrets(*(secrets.token_urlsafe(18) for _ in range(3)))
    for node in nodes(cfg):
        props = local_patroni.member_props(cfg, node, ha_secrets, tls, timescaledb)
        PatroniProcess(node.name, node.host, node.restapi_port, Path(props["config_file"]),
                       Path(node.paths.data_dir), tls).write_config(props["patroni_yml"])
        hostctl.make_dir(Path(node.paths.data_dir), 0o700)
        hostctl.make_dir(Path(node.paths.socket_dir), 0o755)
    for m in local_patroni.etcd_props(cfg, tls)["members"]:
        hostctl.make_dir(Path(m["base"]), 0o700)
        hostctl.write_file(Path(m["base"]) / "etcd.conf.yml", m["config"], 0o600)
    proxy = local_patroni.proxy_props(cfg, tls)
    hostctl.make_dir(Path(proxy["config_file"]).parent, 0o700)
    hostctl.write_file(Path(proxy["config_file"]), proxy["haproxy_cfg"], 0o600)
    backup = local_patroni.backup_props(cfg)
    stanza.write_files(PgBackRest(Path(backup["config_path"]), backup["stanza"]),
                       backup["pgbackrest_conf"], lay.backup_paths)
    tadmin, pooler_auth = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    userlist = tenant_users.auth_file(cfg, pw["app"], pw["admin"], tadmin, pooler_auth)
    pooler = local_patroni.pooler_props(cfg, userlist, tls)
    hostctl.make_dir(Path(pooler["ini_path"]).parent, 0o700)
    hostctl.write_file(Path(pooler["ini_path"]), pooler["pgbouncer_ini"], 0o600)
    hostctl.write_file(Path(pooler["auth_file"]), userlist, 0o600)
    hostctl.make_dir(Path(pooler["socket_dir"]), 0o755)
    # The SQL goes through HAProxy as the owner, as the platform's schema engine does.
    standby.write_passfile(lay.secrets / "owner.pgpass", "*", cfg.ha.haproxy_port,
                           pg.owner_role, pw["owner"])
    files = {"setup.sql": setup_sql(cfg, pw, replication=False),
             "platform.sql": platform_sql(pg.app_role), "ha.env": _env_file(cfg, tls)}
    for name, text in files.items():
        hostctl.write_file(conf / name, text, 0o600)
    hostctl.make_dir(work / "pids", 0o700)
    hostctl.chown_service(work, recursive=True)
    return cfg


def _stop(pid_file: Path, timeout: float = 60.0) -> None:
    """SIGTERM the process a pid file names and wait for it (SIGKILL after `timeout`)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def teardown(work: Path, cfg: config.PlatformConfig) -> None:
    """PgBouncer, HAProxy, Patroni (which stops its PostgreSQL), etcd; then the files."""
    pids = work / "pids"
    _stop(Path(local_patroni.pooler_props(cfg, "", layout(cfg).tls)["pid_file"]))
    _stop(pids / "haproxy.pid")
    for node in nodes(cfg):
        _stop(pids / f"{node.name}.pid")
    for node in nodes(cfg):  # whatever Patroni left running
        hostctl.Server(Path(node.paths.data_dir), 0).stop(mode="immediate")
    for m in etcd(cfg):
        _stop(pids / f"{m.name}.pid")
    shutil.rmtree(work, ignore_errors=True)


def shell_baseline(settings: dict[str, Any]) -> tuple[float, str]:
    """Seconds bench/baseline_up_ha.sh takes on files rendered for `settings`."""
    work = scratch_dir("pgp-bench-shell-ha-")
    cfg = prepare(work, settings)
    try:
        seconds, _ = common.timed(lambda: common.run([str(SCRIPT), str(work)],
                                                     as_service=True, timeout=900))
    finally:
        teardown(work, cfg)
    return seconds, common.shown(["bench/baseline_up_ha.sh", "WORK"])


def _round() -> tuple[float, float, Platform, str, str]:
    """One round, in this order: the plain floor, the HA floor, the platform's cold `up`."""
    plain, plain_cmd = cold_up.shell_baseline()
    floor, floor_cmd = shell_baseline(ha_settings(patroni_settings()))
    settings = ha_settings(patroni_settings())  # free ports on every address it uses
    p = Platform(stack=ThrowawayStack("bench-ha", settings), port=settings["postgres"]["port"])
    try:
        p.stack.init()
        common.bring_up(p)
    finally:
        p.stack.remove()
    return plain, floor, p, plain_cmd, floor_cmd


def run_ha(rounds: int = 1) -> list[Figure]:
    """P1ha against the HA floor (the goal's ratio) and the plain floor (context), all
    measured in each round; with several rounds, the median round by the goal's ratio
    (the machine's load moves every figure, the ratios within a round much less)."""
    results = [_round() for _ in range(rounds)]
    for n, (plain, floor, p, _, _) in enumerate(results, start=1):
        print(f"round {n}: P1ha {p.up_seconds:.2f} s, HA floor {floor:.2f} s, plain floor "
              f"{plain:.2f} s: {p.up_seconds / floor:.2f}x, {p.up_seconds / plain:.2f}x",
              flush=True)
    by_ratio = sorted(results, key=lambda r: r[2].up_seconds / r[1])
    plain, floor, p, plain_cmd, floor_cmd = by_ratio[(len(by_ratio) - 1) // 2]
    ratios = ", ".join(common.x(r[2].up_seconds / r[1]) for r in results)
    what = ("cold `up` with ha.manager patroni: etcd x3, Patroni x3, HAProxy, pooler, "
            "first full backup, all SQL, 3 tenants")
    up_cmd = p.pulumi_cmd("up", "--yes")
    return [common.report(Figure(
        "P1ha", what, common.secs(p.up_seconds),
        f"{common.secs(floor)} (shell script with etcd and Patroni)",
        common.x(p.up_seconds / floor), "≤ 1.5×", p.up_seconds / floor <= 1.5,
        (up_cmd, floor_cmd), note=f"round ratios {ratios}; slowest steps as the engine "
        f"reported them: {cold_up.slowest(p.up_output)}")),
        common.report(Figure(
            "P1ha-plain", "the same `up` against the plain floor (no etcd, no Patroni); "
            "context: what Patroni itself adds", common.secs(p.up_seconds),
            f"{common.secs(plain)} (shell script)", common.x(p.up_seconds / plain), "-",
            None, (up_cmd, plain_cmd),
            note=f"HA floor / plain floor: {common.x(floor / plain)}"))]
