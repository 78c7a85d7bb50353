"""P1: a cold `pulumi up` of the local platform vs the same server work as a shell script.

The platform: a primary, 2 streaming replicas, PgBouncer, pgBackRest with its
first full backup, all of sql/ and 3 tenants, on a throw-away stack with its
own backend. The baseline, bench/baseline_up.sh, does the same server work by
hand (initdb, start, roles, stanza-create and a full backup with --start-fast,
pg_basebackup twice, pgbouncer, psql -f of the SQL) from files rendered by the
same renderers before the clock starts. Usage::

    .venv/bin/python -m bench.cold_up          # P1
    .venv/bin/python -m bench.cold_up --ha [--rounds N]   # P1ha: with ha.manager patroni,
                                       # against the HA floor and the plain one (cold_up_ha)
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import sys
from pathlib import Path

from psycopg import sql

from bench import common
from bench.common import TENANTS, Figure, Platform
from infra import config, hostctl, render, roles, scram
from infra import tls as infra_tls
from infra.backends import local
from infra.backends.local_layout import layout, replicas
from infra.hostctl import standby
from infra.schema import credentials, history
from infra.schema.files import Migration, MigrationSet
from infra.schema.tenants import schema_for
from tests.support import scratch_dir

SCRIPT = common.ROOT / "bench" / "baseline_up.sh"
TENANT_KEY = secrets.token_urlsafe(32)  # the baseline's tenant passwords derive from it
# `+  pulumi-python:dynamic/local:EtcdCluster etcd created (2s)` in `pulumi up`'s output.
_CREATED = re.compile(r"pulumi-python:dynamic\S* (\S+) created \(([0-9.]+)s\)")


def _sql_text(files: tuple[Migration, ...], values: dict[str, str]) -> str:
    out = []
    for m in files:
        for stmt in m.statements:
            out.append(stmt.render(values, m.ref).as_string(None) + ";")
    return "\n".join(out) + "\n"


def history_sql(schema: str) -> str:
    """The engine's history schema and tables, empty (the monitor policy grants on them)."""
    out = [sql.SQL("CREATE SCHEMA {};").format(sql.Identifier(schema)).as_string(None),
           sql.SQL("CREATE TABLE {} (version integer PRIMARY KEY, description text NOT NULL, "
                   "applied_at timestamptz NOT NULL DEFAULT now());")
           .format(history.engine_table(schema)).as_string(None)]
    for _, _, statements in history.ENGINE_MIGRATIONS:
        out += [sql.SQL(s).format(hist=history.table(schema)).as_string(None) + ";"
                for s in statements]
    return "\n".join(out) + "\n"


def platform_sql(app_role: str) -> str:
    """All of sql/ for 3 tenants, placeholders filled in, as one psql script."""
    ms = MigrationSet.load(common.ROOT / "sql")
    values = {"app_role": app_role, "history_schema": "pgplatform"}
    parts = [history_sql(values["history_schema"]), _sql_text(ms.schema, values)]
    for t in TENANTS:
        parts.append(f"SELECT public.create_tenant('{t['slug']}', '{t['name']}', "
                     f"'{t['plan']}');\n")
        tv = {**values, "tenant_schema": schema_for(t["slug"]), "tenant_slug": t["slug"],
              "tenant_verifier": credentials.verifier(TENANT_KEY, t["slug"])}
        parts.append(f'CREATE SCHEMA "{schema_for(t["slug"])}";\n')
        parts.append(_sql_text(ms.tenant, tv))
    parts.append(_sql_text(ms.policies, values))
    return "".join(parts)


def write_tls(tls: render.TlsFiles, hosts: list[str]) -> None:
    """A CA and a server certificate naming `hosts`, where the layout keeps them."""
    ca = infra_tls.make_ca("bench CA")
    cert = infra_tls.make_server_cert(ca, "bench", hosts)
    Path(tls.ca_file).parent.mkdir(parents=True, exist_ok=True)
    Path(tls.ca_file).write_text(ca.cert_pem)
    Path(tls.cert_file).write_text(cert.cert_pem)
    Path(tls.key_file).write_text(cert.key_pem)
    Path(tls.key_file).chmod(0o600)


def passwords() -> dict[str, str]:
    return {k: secrets.token_urlsafe(18) for k in ("owner", "app", "repl", "admin")}


def setup_sql(cfg: config.PlatformConfig, pw: dict[str, str], *,
              replication: bool = True) -> str:
    """The roles and database, as verifiers (no password in the file). `replication`
    False: Patroni's bootstrap made the replication role from its patroni.yml."""
    pg = cfg.postgres
    repl = [f"CREATE ROLE {pg.replication_role} LOGIN REPLICATION PASSWORD "
            f"'{scram.verifier(pg.replication_role, pw['repl'])}';"] if replication else []
    return "\n".join([
        f"CREATE ROLE {pg.owner_role} LOGIN SUPERUSER PASSWORD "
        f"'{scram.verifier(pg.owner_role, pw['owner'])}';",
        f"CREATE ROLE {pg.app_role} LOGIN NOBYPASSRLS PASSWORD "
        f"'{scram.verifier(pg.app_role, pw['app'])}';",
        *repl,
        # The groups the SQL grants to (infra/roles.py makes them on the platform).
        f"CREATE ROLE {roles.TENANT_GROUP} NOLOGIN;",
        f"CREATE ROLE {roles.TENANT_ADMIN} NOLOGIN;",
        f"CREATE ROLE {roles.MONITOR} NOLOGIN;",
        f"CREATE DATABASE {pg.database} OWNER {pg.owner_role};",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {pg.database} TO {pg.app_role};", ""])


def prepare(work: Path, port: int) -> config.PlatformConfig:
    """Render every file the script copies into place; nothing here is timed."""
    cfg = config.load({"state_dir": str(work), "replicas": 2, "postgres": {"port": port}},
                      "bench")
    pg, lay = cfg.postgres, layout(cfg)
    pw = passwords()
    conf = hostctl.make_dir(work / "conf", 0o700)
    tls = lay.tls
    write_tls(tls, ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    files = {
        "pw": pw["owner"] + "\n",
        "repl_pw": pw["repl"],
        "primary.conf": local.primary_props(cfg, pw["owner"], tls)["postgresql_conf"],
        "pg_hba.conf": render.pg_hba_conf(cfg),
        # Break-glass is the cluster's superuser, reached by peer on the socket as on the
        # platform (pgBackRest's pg1-user); the baseline's owner is a superuser too.
        "pg_ident.conf": render.pg_ident_conf(local.service_os_user()),
        "setup.sql": setup_sql(cfg, pw),
        "platform.sql": platform_sql(pg.app_role),
    }
    for rep in replicas(cfg):
        files[f"{rep.name}.conf"] = local.replica_props(
            cfg, rep, pw["owner"], pw["repl"], tls)["postgresql_conf"]
        standby.write_passfile(rep.passfile, "*", port, pg.replication_role, pw["repl"])
    for name, text in files.items():
        hostctl.write_file(conf / name, text, 0o600)  # passwords among them
    standby.write_passfile(lay.secrets / "owner.pgpass", "*", port, pg.owner_role, pw["owner"])
    backup = local.backup_props(cfg, pw["owner"])
    for d in ("log_path", "lock_path", "spool_path", "repo_path"):
        Path(backup[d]).mkdir(parents=True, exist_ok=True)
    Path(backup["config_path"]).write_text(backup["pgbackrest_conf"])
    userlist = render.userlist_txt(render.pooler_users(cfg, pw["app"], pw["admin"]))
    pooler = local.pooler_props(cfg, userlist, tls)
    Path(pooler["ini_path"]).parent.mkdir(parents=True, exist_ok=True)
    Path(pooler["ini_path"]).write_text(pooler["pgbouncer_ini"])
    hostctl.write_file(Path(pooler["auth_file"]), userlist, 0o600)
    Path(pooler["socket_dir"]).mkdir(exist_ok=True)
    for rep in replicas(cfg):
        Path(rep.paths.socket_dir).mkdir(exist_ok=True)
    hostctl.chown_service(work, recursive=True)
    return cfg


def teardown(work: Path, cfg: config.PlatformConfig) -> None:
    pid_file = Path(local.pooler_props(cfg, "")["pid_file"])
    if pid_file.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    for d in [work / "primary", *(Path(r.paths.data_dir) for r in replicas(cfg))]:
        hostctl.Server(d, 0).stop(mode="immediate")
    shutil.rmtree(work, ignore_errors=True)


def shell_baseline() -> tuple[float, str]:
    work = scratch_dir("pgp-bench-shell-")
    port = common.platform_ports()
    cfg = prepare(work, port)
    argv = [str(SCRIPT), str(work), str(port)]
    try:
        seconds, _ = common.timed(lambda: common.run(argv, as_service=True, timeout=900))
    finally:
        teardown(work, cfg)
    return seconds, common.shown(["bench/baseline_up.sh", "WORK", "PORT"])


def run(p: Platform) -> list[Figure]:
    """Time the shell baseline, then the cold `up` of `p` (initialised, not yet up)."""
    base, base_cmd = shell_baseline()
    common.bring_up(p)
    ratio = p.up_seconds / base
    return [common.report(Figure(
        "P1", "cold `up`: primary, 2 replicas, pooler, first full backup, all SQL, 3 tenants",
        common.secs(p.up_seconds), f"{common.secs(base)} (shell script)", common.x(ratio),
        "≤ 1.5×", ratio <= 1.5, (p.pulumi_cmd("up", "--yes"), base_cmd),
        note="slowest steps as the engine reported them: " + slowest(p.up_output)))]


def slowest(output: str, count: int = 6) -> str:
    """The resources that took longest to create, from `pulumi up`'s own output."""
    steps = [(float(s), name) for name, s in _CREATED.findall(output)]
    return ", ".join(f"{name} {s:.1f} s" for s, name in sorted(steps, reverse=True)[:count])


def main(argv: list[str]) -> int:
    """`--ha [--rounds N]`: P1 of a Patroni stack (bench/cold_up_ha.py), N rounds."""
    if "--ha" in argv:
        from bench import cold_up_ha

        rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 1
        cold_up_ha.run_ha(rounds)
        return 0
    p = common.new_platform()
    try:
        run(p)
    finally:
        p.stack.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
