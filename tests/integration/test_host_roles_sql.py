"""The roles script pgp-apply runs on dev and prod primaries, on a real server.

It must give the same roles as the local bootstrap step (infra/roles.py), be
safe to run again, and rotate passwords: after a second run with new passwords
the new ones log in, the old ones are refused, and no plaintext password is in
the server's log even with every statement logged.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from infra import roles
from infra.backends.aws_bundle import CloudPasswords, bootstrap_spec
from infra.config import load
from infra.render.roles_sql import bootstrap_script
from tests.support import RunningServer, start_server

CFG = load({"postgres": {"database": "platform_hostsql"}}, "test")
OLD = CloudPasswords(owner="own-1", app="app-1", replicator="rep-1", pooler_admin="adm-1",
                     monitor="mon-1", tenant_admin="ta-1")
NEW = CloudPasswords(owner="own-2", app="app-2", replicator="rep-2", pooler_admin="adm-2",
                     monitor="mon-2", tenant_admin="ta-2")


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_server() as running:
        with psycopg.connect(running.superuser_dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            conn.execute("SELECT pg_reload_conf()")
        yield running


def run_script(server: RunningServer, pw: CloudPasswords) -> None:
    text = bootstrap_script(bootstrap_spec(CFG, pw))
    result = subprocess.run(["psql", "-X", "-q", "-d", server.superuser_dsn(), "-f", "-"],
                            input=text, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def login(server: RunningServer, role: str, password: str, db: str = "platform_hostsql") -> str:
    with psycopg.connect(server.server.dsn(role, password, db) + " sslmode=require") as conn:
        row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def test_script_makes_the_roles_of_the_security_model(server: RunningServer) -> None:
    run_script(server, OLD)
    run_script(server, OLD)        # idempotent: a second run changes nothing, fails nothing
    pg = CFG.postgres
    with psycopg.connect(server.superuser_dsn(), autocommit=True) as conn:
        rows: dict[str, tuple[str, ...]] = dict(conn.execute(
            "SELECT rolname, (rolsuper, rolbypassrls, rolreplication, rolcreatedb) "
            "FROM pg_roles WHERE rolname = ANY(%s)",
            ([pg.owner_role, pg.app_role, pg.replication_role, roles.MONITOR,
              roles.TENANT_ADMIN, roles.TENANT_GROUP],)).fetchall())
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database "
                             "WHERE datname = 'platform_hostsql'").fetchone()
        monitor = conn.execute("SELECT pg_has_role(%s, 'pg_monitor', 'member')",
                               (roles.MONITOR,)).fetchone()
    assert rows[pg.owner_role] == ("f", "f", "f", "t")      # not a superuser: migrations run as it
    assert rows[pg.app_role] == rows[roles.TENANT_ADMIN] == ("f", "f", "f", "f")
    assert rows[pg.replication_role] == ("f", "f", "t", "f")
    assert roles.TENANT_GROUP in rows and owner == (pg.owner_role,) and monitor == (True,)
    assert login(server, pg.app_role, OLD.app) == pg.app_role
    assert login(server, roles.MONITOR, OLD.monitor) == roles.MONITOR


def test_rotation_takes_new_passwords_and_refuses_old_ones(server: RunningServer) -> None:
    run_script(server, OLD)
    pg = CFG.postgres
    before = server.server.log_file.stat().st_size
    run_script(server, NEW)
    for role, old, new in ((pg.owner_role, OLD.owner, NEW.owner), (pg.app_role, OLD.app,
                           NEW.app), (roles.MONITOR, OLD.monitor, NEW.monitor),
                           (roles.TENANT_ADMIN, OLD.tenant_admin, NEW.tenant_admin)):
        assert login(server, role, new) == role
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            login(server, role, old)
    log = server.server.log_file.read_text()
    assert "ALTER ROLE" in log[before:]            # statements were logged...
    for pw in (*vars(OLD).values(), *vars(NEW).values()):
        assert f"'{pw}'" not in log                # ...with verifiers, never a password
