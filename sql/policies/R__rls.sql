-- Row-level security on the shared tables. The tenant of a transaction comes
-- from public.current_tenant_id(), i.e. set_config('app.tenant_id', …, true):
-- transaction-local, so it works behind PgBouncer transaction pooling and
-- never leaks to the next client. Without it, the app role sees no rows.
--
-- FORCE makes even the tables' owner go through policies; the owner (the
-- role running migrations, CURRENT_USER here) gets an explicit, visible
-- all-rows policy so the engine and TimescaleDB jobs can see the registry
-- and every tenant's events. Superusers and BYPASSRLS roles skip RLS
-- entirely, which is why R__grants.sql refuses an app role that has either.
-- Re-run whenever this file changes: every policy is dropped and recreated.
--
-- public.events has no RLS on purpose: TimescaleDB refuses columnstore and
-- continuous aggregates on a table with row security. It is granted to nobody
-- and reached only through the security-barrier views of
-- schema/V0010__events_tenant_views.sql (see sql/README.md).

ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.tenants FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS platform_owner ON public.tenants;
CREATE POLICY platform_owner ON public.tenants TO CURRENT_USER USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS tenant_self ON public.tenants;
CREATE POLICY tenant_self ON public.tenants FOR SELECT TO ${app_role}
    USING (id = public.current_tenant_id());

ALTER TABLE public.tenant_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.tenant_audit FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS platform_owner ON public.tenant_audit;
CREATE POLICY platform_owner ON public.tenant_audit TO CURRENT_USER USING (true) WITH CHECK (true);
