-- PgBouncer's auth_query for tenant roles (issue #12): a tenant made at run time
-- (public.create_tenant, then the next apply makes its role) logs in through the
-- pooler without a new userlist.
--
-- PgBouncer logs in as its auth_user (pgbouncer_auth, made by the bootstrap step,
-- infra/roles.py) and calls pgplatform_auth.tenant_login(user). pg_authid is a
-- superuser's to read, and no SECURITY DEFINER function here is owned by one, so
-- the verifiers come from pgplatform_auth.tenant_logins, which the tenant track
-- (sql/tenant/V0003) writes in the same transaction that sets the role's
-- password: the server and PgBouncer hold one verifier (SCRAM pass-through).
--
-- The function answers for tenant roles only: a LOGIN role named tenant_<slug>
-- of an active registered tenant, a member of platform_tenant and of nothing
-- else, with no superuser, BYPASSRLS, REPLICATION, CREATEROLE or CREATEDB. For
-- any other name (the owner, break-glass, the app, a planted row) it returns a
-- mock verifier that matches no password, so PgBouncer refuses the login.

CREATE SCHEMA pgplatform_auth;
REVOKE ALL ON SCHEMA pgplatform_auth FROM PUBLIC;

CREATE TABLE pgplatform_auth.tenant_logins (
    role_name text PRIMARY KEY CHECK (role_name LIKE 'tenant\_%'),
    verifier  text NOT NULL CHECK (verifier LIKE 'SCRAM-SHA-256$%')
);
REVOKE ALL ON pgplatform_auth.tenant_logins FROM PUBLIC;

-- For any name it does not answer for, the function returns a mock verifier
-- (as PostgreSQL's own mock authentication does), derived from a random secret
-- of this database and the name: stable, matching no password, and looking like
-- a tenant's. So PgBouncer answers "password authentication failed" for every
-- refused login, and a client without credentials cannot tell which tenant
-- slugs exist (PgBouncer says "no such user" when the query returns no row).
CREATE TABLE pgplatform_auth.mock_secret (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    secret    bytea NOT NULL
);
INSERT INTO pgplatform_auth.mock_secret (secret)
SELECT pg_catalog.decode(pg_catalog.replace(gen_random_uuid()::text || gen_random_uuid()::text,
                                            '-', ''), 'hex');
REVOKE ALL ON pgplatform_auth.mock_secret FROM PUBLIC;

CREATE FUNCTION pgplatform_auth.tenant_login(p_usename text)
RETURNS TABLE (usename name, passwd text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH real AS (
        SELECT r.rolname, l.verifier
        FROM pgplatform_auth.tenant_logins l
        JOIN pg_catalog.pg_roles r ON r.rolname::text = l.role_name
        WHERE l.role_name = p_usename
          AND r.rolcanlogin
          AND NOT (r.rolsuper OR r.rolbypassrls OR r.rolreplication OR r.rolcreaterole
                   OR r.rolcreatedb)
          AND EXISTS (SELECT 1 FROM public.tenants t
                      WHERE t.schema_name = l.role_name AND t.is_active)
          AND (SELECT pg_catalog.array_agg(m.roleid) FROM pg_catalog.pg_auth_members m
               WHERE m.member = r.oid) = ARRAY['platform_tenant'::regrole::oid]
    ), mock AS (
        SELECT p_usename::name AS rolname,
               'SCRAM-SHA-256$32:'
               || pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(
                      s.secret || '\x00'::bytea || pg_catalog.convert_to('salt:' || p_usename, 'UTF8')), 1, 16), 'base64')
               || '$' || pg_catalog.encode(pg_catalog.sha256(
                      s.secret || '\x01'::bytea || pg_catalog.convert_to(p_usename, 'UTF8')), 'base64')
               || ':' || pg_catalog.encode(pg_catalog.sha256(
                      s.secret || '\x02'::bytea || pg_catalog.convert_to(p_usename, 'UTF8')), 'base64')
               AS verifier
        FROM pgplatform_auth.mock_secret s
    )
    SELECT rolname, verifier FROM real
    UNION ALL
    SELECT rolname, verifier FROM mock WHERE NOT EXISTS (SELECT 1 FROM real)
$$;
REVOKE ALL ON FUNCTION pgplatform_auth.tenant_login(text) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgbouncer_auth') THEN
        GRANT USAGE ON SCHEMA pgplatform_auth TO pgbouncer_auth;
        GRANT EXECUTE ON FUNCTION pgplatform_auth.tenant_login(text) TO pgbouncer_auth;
    END IF;
END
$$;
