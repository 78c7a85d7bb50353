-- Each tenant's own LOGIN role. It has its schema's name (tenant_<slug>, so
-- ${tenant_schema} names both), is a member of the group platform_tenant
-- (sql/schema/V0005) through which shared objects are granted, and gets
-- USAGE and DML on its own schema only: no CREATE, no other tenant's schema,
-- no TEMPORARY. ${tenant_verifier} is the SCRAM verifier of its password,
-- derived from the stack's tenant key by the engine (infra/schema/credentials.py);
-- empty when the engine has no key (the role then cannot log in).
--
-- The grants name the template's tables one by one: `GRANT ... ON ALL TABLES
-- IN SCHEMA` scans pg_class once per tenant (see V0001 and bench P3b).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = ${tenant_schema:literal}) THEN
        CREATE ROLE ${tenant_schema} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT
            NOREPLICATION NOBYPASSRLS IN ROLE platform_tenant
            PASSWORD ${tenant_verifier:literal};
    ELSIF ${tenant_verifier:literal} <> '' THEN
        ALTER ROLE ${tenant_schema} PASSWORD ${tenant_verifier:literal};
    END IF;
END
$$;

GRANT USAGE ON SCHEMA ${tenant_schema} TO ${tenant_schema};
GRANT SELECT, INSERT, UPDATE, DELETE ON ${tenant_schema}.users, ${tenant_schema}.metrics_sessions,
    ${tenant_schema}.tool_metrics, ${tenant_schema}.dashboard_configs TO ${tenant_schema};
GRANT USAGE, SELECT ON SEQUENCE ${tenant_schema}.tool_metrics_id_seq TO ${tenant_schema};
ALTER DEFAULT PRIVILEGES IN SCHEMA ${tenant_schema}
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${tenant_schema};
ALTER DEFAULT PRIVILEGES IN SCHEMA ${tenant_schema}
    GRANT USAGE, SELECT ON SEQUENCES TO ${tenant_schema};
