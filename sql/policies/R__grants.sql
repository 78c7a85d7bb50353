-- What the application role may do, and a check that it stays least-privileged:
-- it must not be a superuser, must not have BYPASSRLS, and must own nothing in
-- this database (an owner could disable RLS on its own tables). The apply
-- fails with a clear message otherwise.

GRANT USAGE ON SCHEMA public TO ${app_role};
REVOKE ALL ON public.tenants, public.events, public.tenant_audit, public.events_hourly
    FROM ${app_role};
GRANT SELECT ON public.tenants TO ${app_role};
-- events and events_hourly are granted to nobody: tenants and the app reach
-- them through public.tenant_events and public.tenant_events_hourly
-- (schema/V0010__events_tenant_views.sql).
GRANT SELECT ON public.tenant_events_hourly TO ${app_role};
-- create_tenant is tenant_admin's alone (R__tenant_roles.sql): the app role must not
-- learn another tenant's id or metadata through it, nor provision tenants.
REVOKE ALL ON FUNCTION public.create_tenant(text, text, text, text) FROM ${app_role};
GRANT EXECUTE ON FUNCTION public.current_tenant_id() TO ${app_role};
REVOKE ALL ON SCHEMA ${history_schema} FROM ${app_role};

DO $$
DECLARE
    r pg_roles%ROWTYPE;
    owned text;
BEGIN
    SELECT * INTO r FROM pg_roles WHERE rolname = ${app_role:literal};
    IF r.rolsuper OR r.rolbypassrls THEN
        RAISE EXCEPTION 'app role % must not be a superuser nor have BYPASSRLS (rolsuper=%, rolbypassrls=%)',
            r.rolname, r.rolsuper, r.rolbypassrls
            USING HINT = 'ALTER ROLE ... NOSUPERUSER NOBYPASSRLS';
    END IF;
    SELECT string_agg(what, ', ') INTO owned FROM (
        SELECT 'relation ' || c.oid::regclass::text AS what FROM pg_class c WHERE c.relowner = r.oid
        UNION ALL
        SELECT 'schema ' || quote_ident(n.nspname) FROM pg_namespace n WHERE n.nspowner = r.oid
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p WHERE p.proowner = r.oid
    ) o;
    IF owned IS NOT NULL THEN
        RAISE EXCEPTION 'app role % must own nothing, but owns: %', r.rolname, owned
            USING HINT = 'ALTER ... OWNER TO the owner role';
    END IF;
END
$$;
