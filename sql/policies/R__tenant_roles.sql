-- What the tenant roles (members of platform_tenant, sql/schema/V0005) and
-- tenant_admin may do with shared objects. Granted to the group, never to
-- each tenant role, so the cost does not grow with the tenant count.
--
-- A tenant role reads only its own registry row (public.current_tenant_id()
-- is keyed on the login role) and reaches shared time-series data only
-- through security-barrier views that filter on that id; it has no grant on
-- any base table that holds other tenants' rows.

GRANT USAGE ON SCHEMA public TO platform_tenant, tenant_admin;
REVOKE ALL ON public.tenants, public.tenant_audit, public.platform_limits
    FROM platform_tenant, tenant_admin;
GRANT SELECT (id, slug, name, domain, schema_name, subscription_plan, is_active, created_at)
    ON public.tenants TO platform_tenant;
GRANT EXECUTE ON FUNCTION public.current_tenant_id() TO platform_tenant;
GRANT EXECUTE ON FUNCTION public.create_tenant(text, text, text, text) TO tenant_admin;
REVOKE ALL ON SCHEMA ${history_schema} FROM platform_tenant, tenant_admin;

DROP POLICY IF EXISTS tenant_role_self ON public.tenants;
CREATE POLICY tenant_role_self ON public.tenants FOR SELECT TO platform_tenant
    USING (id = public.current_tenant_id());

DO $$
BEGIN
    IF pg_catalog.to_regclass('public.tenant_events_hourly') IS NOT NULL THEN
        GRANT SELECT ON public.tenant_events_hourly TO platform_tenant;
    END IF;
END
$$;

-- The guard R__grants.sql keeps for the app role, for every tenant role and
-- tenant_admin: no superuser, no BYPASSRLS, no CREATEROLE, nothing owned.
DO $$
DECLARE
    bad text;
BEGIN
    -- Set-based (hash joins), so it stays linear at 10,000 tenant roles.
    WITH members AS (
        SELECT m.member AS oid FROM pg_catalog.pg_auth_members m
        WHERE m.roleid = 'platform_tenant'::regrole
        UNION SELECT 'tenant_admin'::regrole::oid
    ), owners AS (
        SELECT relowner AS oid FROM pg_catalog.pg_class
        UNION SELECT nspowner FROM pg_catalog.pg_namespace
        UNION SELECT proowner FROM pg_catalog.pg_proc
    )
    SELECT string_agg(r.rolname, ', ') INTO bad
    FROM pg_catalog.pg_roles r JOIN members USING (oid)
    WHERE r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication
       OR r.oid IN (SELECT oid FROM owners);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'tenant roles must be plain LOGIN roles that own nothing; not so: %', bad
            USING HINT = 'ALTER ROLE ... NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB NOREPLICATION';
    END IF;
END
$$;
