-- TimescaleDB policies for public.events: columnstore (compression) after 7
-- days, retention of 90 days, and the hourly continuous aggregate's refresh.
-- They are Timescale License features: with the Apache-only build
-- (timescaledb.license = 'apache') or without TimescaleDB they are skipped
-- with a NOTICE, and events stays a plain table with a BRIN index on time
-- (see V0004__events.sql and sql/README.md). Every call is idempotent.

DO $$
DECLARE
    v int[];
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
    SELECT string_to_array(regexp_replace(extversion, '[^0-9.].*$', ''), '.')::int[]
      INTO v FROM pg_extension WHERE extname = 'timescaledb';

    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = 'public' AND hypertable_name = 'events'
                     AND compression_enabled) THEN
        IF v >= ARRAY[2, 18] THEN
            EXECUTE $q$ALTER TABLE public.events SET (timescaledb.enable_columnstore = true,
                       timescaledb.segmentby = 'tenant_id',
                       timescaledb.orderby = 'occurred_at DESC')$q$;
        ELSE
            EXECUTE $q$ALTER TABLE public.events SET (timescaledb.compress,
                       timescaledb.compress_segmentby = 'tenant_id',
                       timescaledb.compress_orderby = 'occurred_at DESC')$q$;
        END IF;
    END IF;
    IF v >= ARRAY[2, 18] THEN
        EXECUTE $q$CALL add_columnstore_policy('public.events', after => INTERVAL '7 days',
                                                if_not_exists => true)$q$;
    ELSE
        PERFORM add_compression_policy('public.events', INTERVAL '7 days', if_not_exists => true);
    END IF;
    PERFORM add_retention_policy('public.events', INTERVAL '90 days', if_not_exists => true);

    IF EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
               WHERE view_schema = 'public' AND view_name = 'events_hourly') THEN
        PERFORM add_continuous_aggregate_policy('public.events_hourly',
            start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
            schedule_interval => INTERVAL '1 hour', if_not_exists => true);
    END IF;
END
$$;
