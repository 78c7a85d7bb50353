-- What platform_monitor (the exporters and the health command; a member of
-- pg_monitor only, made by the bootstrap step, infra/roles.py) may read beyond
-- the statistics views: the migration history, to count pending files, and the
-- registry's bookkeeping columns, to count active tenants. Nothing of a
-- tenant's own data, no write, no function. Skipped where the role does not
-- exist (a database migrated without the platform's bootstrap step).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'platform_monitor') THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA public, ${history_schema} TO platform_monitor;
    GRANT SELECT ON ${history_schema}.schema_history, ${history_schema}.engine_history
        TO platform_monitor;
    REVOKE ALL ON public.tenants FROM platform_monitor;
    GRANT SELECT (slug, name, subscription_plan, schema_name, is_active)
        ON public.tenants TO platform_monitor;
    DROP POLICY IF EXISTS monitor_counts ON public.tenants;
    CREATE POLICY monitor_counts ON public.tenants FOR SELECT TO platform_monitor
        USING (true);
    IF pg_catalog.to_regclass('public.timescaledb_job_runs') IS NOT NULL THEN
        GRANT SELECT ON public.timescaledb_job_runs TO platform_monitor;
    END IF;
END
$$;
