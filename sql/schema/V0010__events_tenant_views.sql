-- Tenant isolation for the time-series data without row-level security.
--
-- TimescaleDB refuses columnstore (compression) and continuous aggregates on a
-- hypertable with RLS, and refuses RLS once columnstore is on. So public.events
-- and public.events_hourly carry no RLS and are granted to nobody: they belong
-- to the owner role, whose policy jobs compress, drop and refresh them. Tenant
-- roles (members of platform_tenant) and the app role reach them only through
-- security-barrier views that filter on public.current_tenant_id(), which for
-- a tenant role is keyed on the login role and for the app role on the
-- transaction-local app.tenant_id. The same views exist without TimescaleDB,
-- so applications run unchanged on both paths. See sql/README.md.

-- The group every tenant role is a member of (sql/schema/V0005__tenant_roles.sql
-- creates it too; whichever runs first makes it).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'platform_tenant') THEN
        CREATE ROLE platform_tenant NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOREPLICATION NOBYPASSRLS;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO platform_tenant;

-- Databases made before this version had RLS on events (policies/R__rls.sql).
ALTER TABLE public.events NO FORCE ROW LEVEL SECURITY;
ALTER TABLE public.events DISABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS platform_owner ON public.events;
DROP POLICY IF EXISTS tenant_isolation ON public.events;
REVOKE ALL ON public.events, public.events_hourly FROM PUBLIC, ${app_role}, platform_tenant;

-- Raw events of the caller's tenant. Inserts default tenant_id to the caller's
-- tenant, and WITH CHECK OPTION refuses rows for any other tenant (or none).
-- security_barrier keeps a caller's own predicates (even leaky functions) from
-- running before the tenant filter.
DO $$
DECLARE
    geo text := CASE WHEN EXISTS (SELECT 1 FROM information_schema.columns
                                  WHERE table_schema = 'public' AND table_name = 'events'
                                    AND column_name = 'location')
                     THEN ', location' ELSE '' END;
BEGIN
    EXECUTE format($v$
        CREATE VIEW public.tenant_events WITH (security_barrier) AS
        SELECT tenant_id, occurred_at, kind, value, attributes%s
        FROM public.events
        WHERE tenant_id = public.current_tenant_id()
        WITH CASCADED CHECK OPTION
    $v$, geo);
END
$$;
ALTER VIEW public.tenant_events ALTER COLUMN tenant_id SET DEFAULT public.current_tenant_id();
ALTER VIEW public.tenant_events ALTER COLUMN occurred_at SET DEFAULT now();
ALTER VIEW public.tenant_events ALTER COLUMN attributes SET DEFAULT '{}';

REVOKE ALL ON public.tenant_events, public.tenant_events_hourly FROM PUBLIC;
GRANT SELECT, INSERT ON public.tenant_events TO ${app_role}, platform_tenant;
GRANT SELECT ON public.tenant_events_hourly TO ${app_role}, platform_tenant;
GRANT EXECUTE ON FUNCTION public.current_tenant_id() TO ${app_role}, platform_tenant;
