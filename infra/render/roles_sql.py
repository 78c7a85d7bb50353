"""The bootstrap step of infra/roles.py as one idempotent psql script, for hosts.

On dev and prod hosts the break-glass superuser has no password at all: it
logs in on the local socket by peer authentication only, so the host-side
applier (infra/hostagent) runs this script through `psql` as the `postgres` OS
user. The script makes the same roles, database, grants and revokes as
`roles.cluster_step` and `roles.database_step` (the same `Bootstrap` spec), and
sets every password as a SCRAM verifier: no plaintext password reaches the
server, its log or the wire. It is safe to run again, which is how a password
rotation reaches the database.
"""

from __future__ import annotations

from psycopg import sql

from infra import roles, scram
from infra.render.template import pgquote

_HEADER = ("-- Rendered by pg-platform (infra/render/roles_sql.py). Run by pgp-apply as the\n"
           "-- break-glass superuser (peer); idempotent; holds verifiers, never passwords.\n"
           "\\set ON_ERROR_STOP on\n")


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _create_if_missing(kind: str, name: str, extra: str = "", *args: str) -> str:
    table, column = ("pg_roles", "rolname") if kind == "ROLE" else ("pg_database", "datname")
    values = ", ".join(pgquote(v) for v in (name, *args))
    return (f"SELECT format('CREATE {kind} %I{extra}', {values})\n"
            f" WHERE NOT EXISTS (SELECT FROM pg_catalog.{table} WHERE {column} = "
            f"{pgquote(name)}) \\gexec\n")


def _role(role: roles.RoleSpec) -> str:
    out = _create_if_missing("ROLE", role.name)
    out += (f"ALTER ROLE {_ident(role.name)} LOGIN NOSUPERUSER NOBYPASSRLS {role.attributes} "
            f"PASSWORD {pgquote(scram.verifier(role.name, role.password))};\n")
    for group in role.member_of:
        out += f"GRANT {_ident(group)} TO {_ident(role.name)};\n"
    return out


def _group(name: str) -> str:
    return _create_if_missing(
        "ROLE", name, " NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION")


def cluster_sql(spec: roles.Bootstrap) -> str:
    """Roles and the database (roles.cluster_step)."""
    out = "".join(_role(r) for r in spec.roles())
    out += _group(roles.TENANT_GROUP)
    if spec.tenant_admin is None:
        out += _group(roles.TENANT_ADMIN)
    db, owner = _ident(spec.database), _ident(spec.owner.name)
    out += _create_if_missing("DATABASE", spec.database, " OWNER %I", spec.owner.name)
    out += f"ALTER DATABASE {db} OWNER TO {owner};\n"
    out += f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;\n"
    connect = [spec.app.name, roles.TENANT_GROUP, roles.TENANT_ADMIN,
               *(r.name for r in (spec.monitor,) if r is not None), *spec.extra_connect]
    out += f"GRANT CONNECT ON DATABASE {db} TO {', '.join(map(_ident, connect))};\n"
    no_temp = (spec.app.name, roles.TENANT_GROUP, roles.TENANT_ADMIN)
    out += f"REVOKE TEMPORARY ON DATABASE {db} FROM {', '.join(map(_ident, no_temp))};\n"
    out += "REVOKE ALL ON DATABASE postgres FROM PUBLIC;\n"
    out += "REVOKE ALL ON DATABASE template1 FROM PUBLIC;\n"
    if spec.monitor is not None:
        out += f"GRANT CONNECT ON DATABASE postgres TO {_ident(spec.monitor.name)};\n"
    return out


def database_sql(spec: roles.Bootstrap) -> str:
    """Inside the platform database: extensions and revokes (roles.database_step)."""
    out = "REVOKE CREATE ON SCHEMA public FROM PUBLIC;\n"
    for fn in roles.LO_FUNCTIONS:
        out += f"REVOKE EXECUTE ON FUNCTION pg_catalog.{fn} FROM PUBLIC;\n"
    names = ", ".join(pgquote(e) for e in spec.extensions)
    # An installed but not preloaded timescaledb would end the session (FATAL).
    out += ("SELECT format('CREATE EXTENSION IF NOT EXISTS %I', name)\n"
            f"  FROM pg_catalog.pg_available_extensions WHERE name IN ({names})\n"
            "   AND (name <> 'timescaledb' OR 'timescaledb' = ANY(string_to_array(\n"
            "        replace(current_setting('shared_preload_libraries'), ' ', ''), ',')))\n"
            "  ORDER BY name \\gexec\n")
    statements = [
        "REVOKE ALL ON public.pg_stat_statements, public.pg_stat_statements_info FROM PUBLIC",
        "REVOKE EXECUTE ON FUNCTION public.pg_stat_statements(boolean) FROM PUBLIC",
        "GRANT SELECT ON public.pg_stat_statements, public.pg_stat_statements_info "
        "TO pg_read_all_stats",
        "GRANT EXECUTE ON FUNCTION public.pg_stat_statements(boolean) TO pg_read_all_stats",
    ]
    for statement in statements:
        out += (f"SELECT {pgquote(statement)} WHERE EXISTS (SELECT FROM pg_catalog.pg_extension "
                "WHERE extname = 'pg_stat_statements') \\gexec\n")
    return out


def bootstrap_script(spec: roles.Bootstrap) -> str:
    """The whole step: cluster, then `\\connect` to the platform database."""
    return (_HEADER + cluster_sql(spec) + f"\\connect {_ident(spec.database)}\n"
            + database_sql(spec))
