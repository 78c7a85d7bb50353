-- A shared time-series table: every tenant's events in one table, keyed by
-- tenant_id and protected by row-level security (sql/policies/R__rls.sql).
--
-- With TimescaleDB it becomes a hypertable with 1-day chunks; columnstore
-- (compression), retention and the hourly continuous aggregate's refresh are
-- policies in sql/policies/R__timescaledb.sql.
-- FALLBACK without TimescaleDB: a plain table with a BRIN index on time (tiny,
-- and good for append-mostly time ranges), an ordinary hourly view instead of
-- the continuous aggregate, and no automatic retention or compression.

CREATE TABLE public.events (
    tenant_id   uuid NOT NULL REFERENCES public.tenants (id) ON DELETE CASCADE,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL CHECK (length(kind) BETWEEN 1 AND 100),
    value       double precision,
    attributes  jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX events_tenant_time ON public.events (tenant_id, occurred_at DESC);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('public.events',
                                  by_range('occurred_at', INTERVAL '1 day'));
    ELSE
        CREATE INDEX events_time_brin ON public.events USING brin (occurred_at);
    END IF;
END
$$;

-- Where an event happened: a PostGIS geography point with a GiST index, only
-- where PostGIS is installed (the column is simply absent otherwise).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis') THEN
        ALTER TABLE public.events ADD COLUMN location geography(Point, 4326);
        CREATE INDEX events_location ON public.events USING gist (location);
    END IF;
END
$$;

-- Hourly roll-up. With TimescaleDB (Timescale License) a continuous
-- aggregate, created WITH NO DATA so it may run inside this migration's
-- transaction; its refresh policy fills it. Otherwise (no TimescaleDB, or the
-- Apache-only build) a plain view with the same columns.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND coalesce(current_setting('timescaledb.license', true), '') = 'timescale' THEN
        EXECUTE $v$
            CREATE MATERIALIZED VIEW public.events_hourly
            WITH (timescaledb.continuous) AS
            SELECT tenant_id,
                   time_bucket(INTERVAL '1 hour', occurred_at) AS bucket,
                   kind,
                   count(*) AS events,
                   avg(value) AS avg_value,
                   max(value) AS max_value
            FROM public.events
            GROUP BY tenant_id, bucket, kind
            WITH NO DATA
        $v$;
    ELSE
        CREATE VIEW public.events_hourly AS
        SELECT tenant_id,
               date_trunc('hour', occurred_at) AS bucket,
               kind,
               count(*) AS events,
               avg(value) AS avg_value,
               max(value) AS max_value
        FROM public.events
        GROUP BY tenant_id, bucket, kind;
    END IF;
END
$$;

-- What the application reads: the roll-up of its own tenant only. A
-- continuous aggregate cannot carry row-level security, so the filter lives
-- in this security-barrier view.
CREATE VIEW public.tenant_events_hourly WITH (security_barrier) AS
SELECT bucket, kind, events, avg_value, max_value
FROM public.events_hourly
WHERE tenant_id = public.current_tenant_id();
