"""Security tests against the session's throw-away stack (tests/infra/throwaway.py).

S1 RLS isolation with hypothesis-made data, through PgBouncer as the app role;
S2 scram-sha-256 only; S3 no generated password anywhere in plain text;
S4 TLS with the project's own CA, verify-full for servers and the pooler.
"""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra import hostctl, tls
from infra.backends.local_layout import layout
from infra.config import PlatformConfig
from tests.engine import ThrowawayStack
from tests.infra.inventory import SecretDict, StackAccess
from tests.infra.throwaway import shared_stack

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def stack(pytestconfig: pytest.Config) -> ThrowawayStack:
    return shared_stack(pytestconfig)


@pytest.fixture(scope="module")
def out(stack: ThrowawayStack) -> dict[str, Any]:
    return SecretDict(stack.outputs())


@pytest.fixture(scope="module")
def cfg(stack: ThrowawayStack) -> PlatformConfig:
    return stack.ref.config()


def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


# --- S1: row-level security --------------------------------------------------------------

def tenant_tables(owner_dsn: str) -> list[tuple[str, bool, bool]]:
    """Every table that holds rows of several tenants: it has a tenant_id column (or is the
    registry), with its RLS flags."""
    return [(r[0], r[1], r[2]) for r in rows(owner_dsn, """
        SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'tenant\\_%%' AND n.nspname NOT LIKE '\\_timescaledb%%'
          AND (c.oid = 'public.tenants'::regclass OR EXISTS (
               SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                 AND a.attname = 'tenant_id' AND NOT a.attisdropped))
        ORDER BY 1""")]


# Tables that hold several tenants' rows without RLS, because TimescaleDB refuses
# columnstore and continuous aggregates with it: granted to nobody, reached only
# through security-barrier views (sql/README.md).
VIEW_ISOLATED = {"public.events"}


def test_s1_every_shared_tenant_table_has_rls_enabled_and_forced(out: dict[str, Any],
                                                                 cfg: PlatformConfig) -> None:
    tables = tenant_tables(out["primary_dsn"])
    assert {"public.tenants", "public.events", "public.tenant_audit"} <= {t[0] for t in tables}
    assert all(t[1] and t[2] for t in tables if t[0] not in VIEW_ISOLATED), tables
    for table in VIEW_ISOLATED:
        assert rows(out["primary_dsn"], "SELECT grantee FROM information_schema.role_table_grants "
                                        "WHERE table_schema || '.' || table_name = %s "
                                        "AND grantee <> current_user", (table,)) == []


EVENT = st.tuples(st.sampled_from(["acme", "globex", "initech"]),
                  st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                          min_size=1, max_size=30),
                  st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False,
                                                 width=32)))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(EVENT, max_size=30))
def test_s1_each_tenant_sees_exactly_its_rows_through_the_pooler(
        out: dict[str, Any], events: list[tuple[str, str, float | None]]) -> None:
    owner = out["primary_dsn"]
    ids = dict(rows(owner, "SELECT slug, id::text FROM public.tenants"))
    run = uuid.uuid4().hex
    with psycopg.connect(owner, autocommit=True) as conn:
        for slug, kind, value in events:
            conn.execute("INSERT INTO public.events (tenant_id, kind, value, attributes) "
                         "VALUES (%s, %s, %s, %s)",
                         (ids[slug], kind, value, json.dumps({"run": run})))
    try:
        with psycopg.connect(out["pooler_dsn"], prepare_threshold=None) as app:
            for slug, tenant_id in ids.items():
                with app.transaction():
                    app.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
                    seen = app.execute(
                        "SELECT tenant_id::text, kind FROM public.tenant_events "
                        "WHERE attributes->>'run' = %s", (run,)).fetchall()
                    registry = app.execute("SELECT slug FROM public.tenants").fetchall()
                want = sorted(k for s, k, _ in events if s == slug)
                assert sorted(k for _, k in seen) == want
                assert {t for t, _ in seen} <= {tenant_id}
                assert registry == [(slug,)]
            # No tenant set (the next pooled transaction): nothing at all.
            with app.transaction():
                assert app.execute("SELECT count(*) FROM public.tenant_events"
                                   ).fetchone() == (0,)
    finally:
        rows(owner, "DELETE FROM public.events WHERE attributes->>'run' = %s", (run,))


@settings(max_examples=10, deadline=None)
@given(target=st.sampled_from(["globex", "initech"]), kind=st.text(min_size=1, max_size=20))
def test_s1_a_tenant_cannot_write_into_another(out: dict[str, Any], target: str,
                                               kind: str) -> None:
    ids = dict(rows(out["primary_dsn"], "SELECT slug, id::text FROM public.tenants"))
    with psycopg.connect(out["pooler_dsn"], prepare_threshold=None) as app, \
            pytest.raises(psycopg.errors.WithCheckOptionViolation), app.transaction():
            app.execute("SELECT set_config('app.tenant_id', %s, true)", (ids["acme"],))
            app.execute("INSERT INTO public.tenant_events (tenant_id, kind) VALUES (%s, %s)",
                        (ids[target], kind.replace("\x00", "")))


def test_s1_the_app_role_cannot_bypass_rls_and_owns_nothing(out: dict[str, Any],
                                                            cfg: PlatformConfig) -> None:
    with psycopg.connect(out["app_dsn"], autocommit=True) as app:
        app.execute("SET row_security = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match="would be affected by row-level security"):
            app.execute("SELECT count(*) FROM public.tenants")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            app.execute("SELECT count(*) FROM public.events")  # granted to nobody
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("ALTER TABLE public.events DISABLE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(
                sql.Identifier(cfg.postgres.app_role)))
    role = cfg.postgres.app_role
    assert rows(out["primary_dsn"], "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb "
                                    "FROM pg_roles WHERE rolname = %s", (role,)) == \
        [(False, False, False, False)]
    owned = rows(out["primary_dsn"], """
        SELECT 'relation', c.oid::regclass::text FROM pg_class c
          WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %(r)s)
        UNION ALL SELECT 'schema', nspname FROM pg_namespace
          WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = %(r)s)
        UNION ALL SELECT 'function', p.oid::regprocedure::text FROM pg_proc p
          WHERE p.proowner = (SELECT oid FROM pg_roles WHERE rolname = %(r)s)
        UNION ALL SELECT 'type', t.typname FROM pg_type t
          WHERE t.typowner = (SELECT oid FROM pg_roles WHERE rolname = %(r)s)
        UNION ALL SELECT 'database', datname FROM pg_database
          WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %(r)s)""", {"r": role})
    assert owned == []


# --- S2: scram-sha-256 only --------------------------------------------------------------

def test_s2_pg_hba_allows_hostssl_scram_and_socket_peer_for_break_glass_only(
        out: dict[str, Any]) -> None:
    su = conninfo_to_dict(out["superuser_dsn"])
    for dsn in [out["primary_dsn"], *out["replica_dsns"]]:
        as_su = make_conninfo(dsn, user=str(su["user"]), password=str(su["password"]))
        rules = rows(as_su, "SELECT type, user_name, auth_method, error FROM pg_hba_file_rules")
        assert rules and not any(r[3] for r in rules), rules
        assert {r[0] for r in rules} == {"local", "hostssl"}
        assert {r[2] for r in rules if r[0] == "hostssl"} == {"scram-sha-256"}
        assert [(r[1], r[2]) for r in rules if r[0] == "local"] == [(["postgres"], "peer")]


def test_s2_an_md5_password_and_a_wrong_password_cannot_log_in(out: dict[str, Any]) -> None:
    """scram-sha-256 in pg_hba refuses a role whose stored password is an md5 hash."""
    role, password = f"md5_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(out["primary_dsn"], autocommit=True) as conn:
        conn.execute("SET password_encryption = 'md5'")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
    try:
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(make_conninfo(out["primary_dsn"], user=role, password=password),
                            connect_timeout=10).close()
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(make_conninfo(out["app_dsn"], password="wrong"),
                            connect_timeout=10).close()
    finally:
        rows(out["primary_dsn"], sql.SQL("DROP ROLE {}").format(sql.Identifier(role)).as_string())


# --- S3: no plaintext password in rendered files, logs or plain state ----------------------

def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def secret_values(stack: ThrowawayStack, cfg: PlatformConfig) -> dict[str, str]:
    """Every generated password and key, and each config tenant's derived password."""
    from infra.schema import credentials

    access = StackAccess(stack=stack.name, project_dir=stack.project, env=stack.env)
    found = dict(access.generated_passwords())
    key = str(SecretDict(stack.outputs())["tenant_key"])
    found["tenant-password-key"] = key
    for t in cfg.tenants:
        found[f"tenant_{t.slug} (derived)"] = credentials.password(key, t.slug)
    return found


def test_s3_no_generated_password_in_files_logs_or_plain_state(stack: ThrowawayStack,
                                                              cfg: PlatformConfig) -> None:
    access = StackAccess(stack=stack.name, project_dir=stack.project, env=stack.env)
    passwords = secret_values(stack, cfg)
    plain_state = access.pulumi("stack", "export")
    preview = access.pulumi("preview", "--diff")
    assert len(passwords) >= 8 + len(cfg.tenants) and \
        all(len(p) >= 32 for p in passwords.values()), sorted(passwords)
    # The stack's project, backend (state, history, backups of state) and state_dir (data,
    # rendered files, server/pooler/pgBackRest logs), and the engine's own logs.
    engine_logs = Path(stack.env["PULUMI_HOME"]) / "logs"
    searched = files_under(stack.base) + (files_under(engine_logs) if engine_logs.exists()
                                          else [])
    assert len(searched) > 100  # data dirs, logs, backups, the backend's state files
    assert any(p.suffix == ".log" for p in searched)
    hits: dict[str, list[str]] = {}
    for path in searched:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for name, password in passwords.items():
            if password.encode() in data:
                hits.setdefault(name, []).append(str(path))
    # The only files that may hold one: the 0600 secret files of the service user in a
    # `secrets` folder (the replicas' passfiles, the exporters' password files).
    secret_files = [p for p in searched if p.parent.name == "secrets"]
    # Hand-supervised: each replica's passfile. Patroni: each node's patroni.yml, and the
    # pgpass Patroni writes from it where it dialled another node (the replicas').
    expected = {f"replica-{i}.pgpass" for i in range(1, cfg.replicas + 1)} \
        if cfg.ha.manager == "none" else \
        {f"pg-{i}.yml" for i in range(1, cfg.replicas + 2)} | \
        {f"pg-{i}.pgpass" for i in range(2, cfg.replicas + 2)}
    assert {p.name for p in secret_files} >= expected
    for p in secret_files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        if os.geteuid() == 0:
            import pwd

            assert pwd.getpwuid(p.stat().st_uid).pw_name == hostctl.SERVICE_USER
    allowed = {str(p) for p in secret_files}
    outside = {name: [f for f in found if f not in allowed] for name, found in hits.items()}
    assert {k: v for k, v in outside.items() if v} == {}, outside  # names and files only
    for password in passwords.values():
        assert password not in plain_state
        assert password not in preview


def test_s3_no_generated_password_in_any_process_environment_or_command_line(
        stack: ThrowawayStack, cfg: PlatformConfig) -> None:
    passwords = secret_values(stack, cfg)
    seen = 0
    hits: list[tuple[str, str, str]] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for part in ("environ", "cmdline"):
            try:
                data = (proc / part).read_bytes()
            except OSError:
                continue
            seen += 1
            hits += [(proc.name, part, name) for name, pw in passwords.items()
                     if pw.encode() in data]
    assert seen > 20
    assert hits == []  # pid, file and the secret's name only


# --- S5: TLS for every role on every node; no superuser in any output but break-glass ------

def _nodes(out: dict[str, Any]) -> list[tuple[str, int]]:
    found = [conninfo_to_dict(out["primary_dsn"]), *map(conninfo_to_dict, out["replica_dsns"]),
             conninfo_to_dict(out["pooler_dsn"])]
    return sorted({(str(d["host"]), int(str(d["port"]))) for d in found})


def _role_dsns(out: dict[str, Any], cfg: PlatformConfig) -> dict[str, str]:
    from infra.schema import credentials

    dsns = {k: str(out[k]) for k in ("primary_dsn", "app_dsn", "superuser_dsn", "monitor_dsn",
                                      "tenant_admin_dsn", "pooler_dsn")}
    for t in cfg.tenants:
        dsns[f"tenant_{t.slug}"] = credentials.dsn(str(out["pooler_dsn"]),
                                                   str(out["tenant_key"]), t.slug)
    return dsns


def test_s5_sslmode_disable_is_refused_for_every_role_on_every_node(
        stack: ThrowawayStack, out: dict[str, Any], cfg: PlatformConfig) -> None:
    """Every role of the stack, with its right password, on the primary, every replica and
    PgBouncer, as a normal and as a replication connection: refused without TLS."""
    from infra import roles

    passwords = StackAccess(stack=stack.name, project_dir=stack.project,
                            env=stack.env).generated_passwords()
    dsns = _role_dsns(out, cfg)
    for role in (cfg.postgres.replication_role, roles.POOLER_AUTH, cfg.pooler.admin_user):
        dsns[role] = make_conninfo(out["primary_dsn"], user=role,
                                   password=passwords[f"{role}-password"])
    tried = 0
    for dsn in dsns.values():
        for host, port in _nodes(out):
            for replication in (None, "true"):
                plain = make_conninfo(dsn, host=host, port=str(port), sslmode="disable",
                                      sslrootcert=None, connect_timeout="10",
                                      replication=replication)
                with pytest.raises(psycopg.OperationalError,
                                   match=r"no encryption|SSL required|no pg_hba\.conf entry"):
                    psycopg.connect(plain).close()
                tried += 1
    assert len(dsns) == 9 + len(cfg.tenants)
    assert tried == len(dsns) * len(_nodes(out)) * 2


def test_s5_every_network_client_of_the_stack_uses_tls_and_no_service_is_a_superuser(
        out: dict[str, Any], cfg: PlatformConfig) -> None:
    """Every session on every node, the services' own included (exporters, replication,
    PgBouncer's server connections, the job runner): over TLS, as a role that is not a
    superuser. Only break-glass sessions on the local socket (pgBackRest, the providers)
    may be the superuser."""
    from infra.render import monitoring as rm

    for target in rm.local_targets(cfg):  # each exporter logs in when it is scraped
        if target.job == "postgres":
            assert re.search(r"^pg_up 1$", _scrape(target.address), re.MULTILINE), target
    nodes = [out["monitor_dsn"]] + [make_conninfo(out["monitor_dsn"], host=str(
        conninfo_to_dict(d)["host"]), port=str(conninfo_to_dict(d)["port"]))
        for d in out["replica_dsns"]]
    with psycopg.connect(out["pooler_dsn"], prepare_threshold=None, autocommit=True) as keep:
        keep.execute("SELECT 1")  # at least one pooled server connection is open
        for dsn in nodes:
            got = rows(dsn, """
                SELECT a.usename, a.backend_type, a.client_addr IS NOT NULL, s.ssl,
                       r.rolsuper, a.pid = pg_backend_pid()
                FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
                LEFT JOIN pg_roles r ON r.oid = a.usesysid
                WHERE a.backend_type IN ('client backend', 'walsender')""")
            assert got, dsn
            network = [r for r in got if r[2]]
            assert network and all(r[3] for r in network), network
            assert [r for r in network if r[4] is not False] == [], network
            # The exporter of this node is connected, as platform_monitor.
            assert any(r[0] == "platform_monitor" and not r[5] for r in network), network
            # Socket sessions exist only for break-glass (pgBackRest, the providers).
            assert {r[0] for r in got if not r[2]} <= {"postgres"}, got


def _scrape(address: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=20) as resp:
        return str(resp.read().decode())


def test_s5_no_output_role_is_a_superuser_except_break_glass(out: dict[str, Any],
                                                               cfg: PlatformConfig) -> None:
    users = {str(conninfo_to_dict(d)["user"]) for k, d in _role_dsns(out, cfg).items()
             if k != "superuser_dsn"}
    users |= {str(conninfo_to_dict(d)["user"]) for d in out["replica_dsns"]}
    users.add(cfg.postgres.replication_role)  # what the replicas' primary_conninfo uses
    flags = dict(rows(out["monitor_dsn"], "SELECT rolname, rolsuper FROM pg_roles "
                                          "WHERE rolname = ANY(%s)", (sorted(users),)))
    assert set(flags) == users - {cfg.pooler.admin_user}
    assert [u for u, sup in flags.items() if sup] == []
    assert rows(out["superuser_dsn"], "SELECT rolsuper FROM pg_roles WHERE rolname = "
                                      "current_user") == [(True,)]


# --- S4: TLS with the project's own CA -----------------------------------------------------

def test_s4_servers_use_certificates_from_the_projects_ca(out: dict[str, Any],
                                                          cfg: PlatformConfig) -> None:
    files = layout(cfg).tls
    ca_pem = Path(files.ca_file).read_text()
    cert_pem = Path(files.cert_file).read_text()
    assert out["ca_cert"] == ca_pem
    assert tls.subject(ca_pem) == "CN=tls CA,O=pg-platform"
    assert tls.signed_by(cert_pem, ca_pem) and tls.signed_by(ca_pem, ca_pem)
    assert {"127.0.0.1", "localhost", "127.0.0.2"} <= set(tls.sans(cert_pem))
    key = Path(files.key_file)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    if os.geteuid() == 0:
        import pwd

        assert pwd.getpwuid(key.stat().st_uid).pw_name == hostctl.SERVICE_USER
    with psycopg.connect(out["primary_dsn"], autocommit=True) as conn:
        settings_: dict[str, str] = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('ssl', 'ssl_cert_file', 'ssl_ca_file')").fetchall())
    assert settings_ == {"ssl": "on", "ssl_cert_file": files.cert_file,
                         "ssl_ca_file": files.ca_file}


def test_s4_every_client_path_is_verify_full_tls(out: dict[str, Any]) -> None:
    for dsn in [out["primary_dsn"], out["app_dsn"], *out["replica_dsns"], out["pooler_dsn"]]:
        assert conninfo_to_dict(dsn)["sslmode"] == "verify-full"
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                                ).fetchone() == (True,)
    # The same DSN to an address the certificate does not name is refused.
    wrong = make_conninfo(out["primary_dsn"], host="127.0.0.9", hostaddr="127.0.0.1")
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(wrong, connect_timeout=10).close()


def test_s4_pgbouncer_refuses_clients_without_tls(out: dict[str, Any]) -> None:
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(make_conninfo(out["pooler_dsn"], sslmode="disable"),
                        connect_timeout=10).close()
