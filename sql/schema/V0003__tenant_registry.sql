-- The tenant registry. The engine relies on a small contract with it (see
-- sql/README.md): columns slug, name, subscription_plan, schema_name and
-- is_active, and the function create_tenant(slug, name, plan).

CREATE TABLE public.tenants (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- the same rule as infra.schema.tenants.validate_slug
    slug              text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9_]{0,49}$'),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    domain            text UNIQUE CHECK (domain = lower(domain)),
    schema_name       text GENERATED ALWAYS AS ('tenant_' || slug) STORED,
    subscription_plan text NOT NULL DEFAULT 'standard'
                      CHECK (subscription_plan IN ('free', 'standard', 'premium', 'enterprise')),
    is_active         boolean NOT NULL DEFAULT true,
    metadata          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_schema_name_key UNIQUE (schema_name)
);

CREATE FUNCTION public.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER tenants_touch BEFORE UPDATE ON public.tenants
    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();

-- Who changed which tenant, when, from what to what. Written by a SECURITY
-- DEFINER trigger, so the application role needs (and has) no access to it.
CREATE TABLE public.tenant_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    action      text NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),
    changed_by  text NOT NULL DEFAULT session_user,
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    old_row     jsonb,
    new_row     jsonb
);
CREATE INDEX tenant_audit_tenant ON public.tenant_audit (tenant_id, changed_at);

CREATE FUNCTION public.audit_tenant_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO public.tenant_audit (tenant_id, action, old_row, new_row)
    VALUES (coalesce(NEW.id, OLD.id), TG_OP,
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END
$$;

CREATE TRIGGER tenants_audit AFTER INSERT OR UPDATE OR DELETE ON public.tenants
    FOR EACH ROW EXECUTE FUNCTION public.audit_tenant_change();

-- Register a tenant, or update its name and plan. Stack-config tenants go
-- through it on every apply; applications call it to add tenants at run time
-- (the next apply creates their schema from sql/tenant). The table's CHECK
-- enforces the slug rule, so no caller can smuggle SQL into a schema name.
CREATE FUNCTION public.create_tenant(p_slug text, p_name text,
                                     p_plan text DEFAULT 'standard',
                                     p_domain text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_id uuid;
BEGIN
    INSERT INTO public.tenants AS t (slug, name, subscription_plan, domain)
    VALUES (p_slug, p_name, p_plan, p_domain)
    ON CONFLICT (slug) DO UPDATE
        SET name = EXCLUDED.name,
            subscription_plan = EXCLUDED.subscription_plan,
            domain = coalesce(EXCLUDED.domain, t.domain)
        WHERE (t.name, t.subscription_plan) IS DISTINCT FROM
              (EXCLUDED.name, EXCLUDED.subscription_plan)
           OR (EXCLUDED.domain IS NOT NULL AND EXCLUDED.domain IS DISTINCT FROM t.domain)
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM public.tenants WHERE slug = p_slug;
    END IF;
    PERFORM pg_notify('pgplatform_tenants', p_slug);
    RETURN v_id;
END
$$;
REVOKE ALL ON FUNCTION public.create_tenant(text, text, text, text) FROM PUBLIC;

-- The tenant of the current transaction, as set by the application with
-- set_config('app.tenant_id', '<uuid>', true). Transaction-local, so it never
-- leaks to the next client of a PgBouncer transaction-mode server connection.
CREATE FUNCTION public.current_tenant_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('app.tenant_id', true), '')::uuid
$$;
