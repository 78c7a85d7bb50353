-- Tenant isolation by database roles (issue #12).
--
-- * platform_tenant: one NOLOGIN group role. Every tenant's LOGIN role
--   tenant_<slug> (created with its schema by sql/tenant/V0002) is a member.
--   Shared objects are granted to this group, never to thousands of roles.
-- * tenant_admin: the only role that may create tenants at run time, through
--   public.create_tenant, within the quota in public.platform_limits.
-- * public.current_tenant_id(): keyed on the login role through the registry,
--   never on a setting a tenant can choose. The app role keeps the documented
--   "the application chooses the tenant" mode (app.tenant_id, transaction-local).
-- * Every SECURITY DEFINER function names pg_temp last in its search_path, so
--   no temporary type, table, function or operator can stand in for a catalog
--   name (the temp-domain hijack of create_tenant).
-- * No TEMPORARY for the app and tenant roles: with transaction pooling a temp
--   object outlives the transaction on a shared server connection.
--
-- Roles are cluster-wide: they are created only where missing, so a second
-- database on the same cluster reuses them.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'platform_tenant') THEN
        CREATE ROLE platform_tenant NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOREPLICATION NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenant_admin') THEN
        CREATE ROLE tenant_admin NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOREPLICATION NOBYPASSRLS;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO platform_tenant, tenant_admin',
                   current_database());
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC, %I, platform_tenant, tenant_admin',
                   current_database(), ${app_role:literal});
END
$$;

GRANT USAGE ON SCHEMA public TO platform_tenant, tenant_admin;

-- How many tenants the registry may hold before create_tenant refuses more.
-- The engine writes max_tenants from the stack's config on every apply.
CREATE TABLE public.platform_limits (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_tenants integer NOT NULL DEFAULT 1000 CHECK (max_tenants >= 0)
);
INSERT INTO public.platform_limits DEFAULT VALUES;
ALTER TABLE public.platform_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.platform_limits FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_owner ON public.platform_limits TO CURRENT_USER
    USING (true) WITH CHECK (true);

-- The tenant of this session or transaction.
-- SECURITY DEFINER so that the registry lookup needs no grant on it; inside,
-- current_user is the owner, so the caller is session_user, which only a
-- superuser can change (SET SESSION AUTHORIZATION).
CREATE OR REPLACE FUNCTION public.current_tenant_id() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN session_user = ${app_role:literal}::name
            THEN nullif(pg_catalog.current_setting('app.tenant_id', true), '')::uuid
        ELSE (SELECT t.id FROM public.tenants t
              WHERE t.schema_name = session_user::text AND t.is_active)
    END
$$;
REVOKE ALL ON FUNCTION public.current_tenant_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.current_tenant_id() TO ${app_role}, platform_tenant;

-- Register a new tenant. Never updates an existing one: a taken slug or
-- domain is one error whose text is the same whatever the other tenant is, so
-- it reveals neither its id nor its metadata. No NOTIFY: anyone may LISTEN on
-- any channel, so a notification would leak new slugs.
DROP FUNCTION public.create_tenant(text, text, text, text);
CREATE FUNCTION public.create_tenant(p_slug text, p_name text,
                                     p_plan text DEFAULT 'standard',
                                     p_domain text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id pg_catalog.uuid;
    v_max integer;
    v_count bigint;
BEGIN
    -- One creator at a time, so the quota cannot be raced past.
    LOCK TABLE public.platform_limits IN EXCLUSIVE MODE;
    SELECT l.max_tenants INTO v_max FROM public.platform_limits l;
    SELECT pg_catalog.count(*) INTO v_count FROM public.tenants;
    IF v_count >= coalesce(v_max, 0) THEN
        RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded',
            MESSAGE = pg_catalog.format('tenant quota reached (%s tenants)', v_max),
            HINT = 'raise pg-platform:tenant_quota in the stack config';
    END IF;
    BEGIN
        INSERT INTO public.tenants (slug, name, subscription_plan, domain)
        VALUES (p_slug, p_name, p_plan, p_domain)
        RETURNING id INTO v_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION USING ERRCODE = 'unique_violation',
            MESSAGE = 'tenant not created: the slug or domain is not available';
    END;
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION public.create_tenant(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.create_tenant(text, text, text, text) TO tenant_admin;

-- The audit trigger, with the same safe search_path.
CREATE OR REPLACE FUNCTION public.audit_tenant_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO public.tenant_audit (tenant_id, action, old_row, new_row)
    VALUES (coalesce(NEW.id, OLD.id), TG_OP,
            CASE WHEN TG_OP <> 'INSERT' THEN pg_catalog.to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN pg_catalog.to_jsonb(NEW) END);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION public.audit_tenant_change() FROM PUBLIC;

-- Not SECURITY DEFINER, but a trigger on the registry: pin it as well.
ALTER FUNCTION public.touch_updated_at() SET search_path = pg_catalog, pg_temp;
