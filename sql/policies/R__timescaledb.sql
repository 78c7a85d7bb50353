-- TimescaleDB policies for public.events, in one procedure:
--
--   CALL public.timescaledb_apply_policies(chunk_interval, compress_after,
--        retention, refresh_start, refresh_end, refresh_every);
--
-- It makes the policies match its arguments, creating what is missing and
-- changing the rest in place with alter_job (job ids stay; nothing is dropped
-- and re-added), and does nothing where nothing differs. `pulumi up` calls it
-- with the stack's `pg-platform:timescaledb` settings (infra/timescaledb/), so
-- a changed retention or compress-after shows in `pulumi preview` and is then
-- applied in place. Below, this file only fills in the defaults where a policy
-- does not exist yet, so `python -m infra.schema apply` alone gives working
-- policies too.
--
-- Policies, columnstore and continuous aggregates are Timescale License
-- features: without TimescaleDB, or with the Apache-only build, it does
-- nothing but say so (events stays a plain table with a BRIN index and
-- events_hourly a plain view; see V0004__events.sql and sql/README.md).

CREATE OR REPLACE PROCEDURE public.timescaledb_apply_policies(
    chunk_interval interval DEFAULT INTERVAL '1 day',
    compress_after interval DEFAULT INTERVAL '7 days',
    retention      interval DEFAULT INTERVAL '90 days',
    refresh_start  interval DEFAULT INTERVAL '3 days',
    refresh_end    interval DEFAULT INTERVAL '1 hour',
    refresh_every  interval DEFAULT INTERVAL '1 hour',
    only_missing   boolean  DEFAULT false)
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v int[];
    j record;
    cur interval;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'TimescaleDB absent: events stays a plain table with a BRIN index';
        RETURN;
    END IF;
    IF coalesce(current_setting('timescaledb.license', true), '') <> 'timescale' THEN
        RAISE NOTICE 'TimescaleDB license %: policies need the Timescale License; skipped',
            coalesce(current_setting('timescaledb.license', true), 'unknown');
        RETURN;
    END IF;
    IF compress_after >= retention THEN
        RAISE EXCEPTION 'timescaledb compress_after (%) must be shorter than retention (%)',
            compress_after, retention;
    END IF;
    SELECT string_to_array(regexp_replace(extversion, '[^0-9.].*$', ''), '.')::int[]
      INTO v FROM pg_extension WHERE extname = 'timescaledb';

    -- Chunk size: applies to chunks created from now on.
    SELECT d.time_interval INTO cur FROM timescaledb_information.dimensions d
     WHERE d.hypertable_schema = 'public' AND d.hypertable_name = 'events'
       AND d.dimension_number = 1;
    IF NOT only_missing AND cur IS DISTINCT FROM chunk_interval THEN
        PERFORM set_chunk_time_interval('public.events', chunk_interval);
    END IF;

    -- Columnstore, segmented by tenant: a tenant's rows stay together when compressed.
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = 'public' AND hypertable_name = 'events'
                     AND compression_enabled) THEN
        IF v >= ARRAY[2, 18] THEN
            ALTER TABLE public.events SET (timescaledb.enable_columnstore = true,
                timescaledb.segmentby = 'tenant_id', timescaledb.orderby = 'occurred_at DESC');
        ELSE
            ALTER TABLE public.events SET (timescaledb.compress,
                timescaledb.compress_segmentby = 'tenant_id',
                timescaledb.compress_orderby = 'occurred_at DESC');
        END IF;
    END IF;

    SELECT job_id, config INTO j FROM timescaledb_information.jobs
     WHERE proc_name = 'policy_compression'
       AND hypertable_schema = 'public' AND hypertable_name = 'events';
    IF j.job_id IS NULL THEN
        IF v >= ARRAY[2, 18] THEN
            CALL add_columnstore_policy('public.events', after => compress_after);
        ELSE
            PERFORM add_compression_policy('public.events', compress_after);
        END IF;
    ELSIF NOT only_missing AND (j.config->>'compress_after')::interval <> compress_after THEN
        PERFORM alter_job(j.job_id, config => jsonb_set(j.config, '{compress_after}',
                                                        to_jsonb(compress_after::text)));
    END IF;

    SELECT job_id, config INTO j FROM timescaledb_information.jobs
     WHERE proc_name = 'policy_retention'
       AND hypertable_schema = 'public' AND hypertable_name = 'events';
    IF j.job_id IS NULL THEN
        PERFORM add_retention_policy('public.events', retention);
    ELSIF NOT only_missing AND (j.config->>'drop_after')::interval <> retention THEN
        PERFORM alter_job(j.job_id, config => jsonb_set(j.config, '{drop_after}',
                                                        to_jsonb(retention::text)));
    END IF;

    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                   WHERE view_schema = 'public' AND view_name = 'events_hourly') THEN
        RAISE NOTICE 'events_hourly is not a continuous aggregate here; no refresh policy';
        RETURN;
    END IF;
    SELECT job_id, config, schedule_interval INTO j FROM timescaledb_information.jobs
     WHERE proc_name = 'policy_refresh_continuous_aggregate'
       AND hypertable_schema = 'public' AND hypertable_name = 'events_hourly';
    IF j.job_id IS NULL THEN
        PERFORM add_continuous_aggregate_policy('public.events_hourly',
            start_offset => refresh_start, end_offset => refresh_end,
            schedule_interval => refresh_every);
    ELSIF NOT only_missing AND ((j.config->>'start_offset')::interval <> refresh_start
                                OR (j.config->>'end_offset')::interval <> refresh_end
                                OR j.schedule_interval <> refresh_every) THEN
        PERFORM alter_job(j.job_id, schedule_interval => refresh_every,
            config => j.config || jsonb_build_object('start_offset', refresh_start::text,
                                                     'end_offset', refresh_end::text));
    END IF;
END
$$;
REVOKE ALL ON PROCEDURE public.timescaledb_apply_policies(interval, interval, interval, interval,
    interval, interval, boolean) FROM PUBLIC;

-- Defaults where a policy is missing; the stack's settings then adjust them in place.
CALL public.timescaledb_apply_policies(only_missing => true);
