-- Extensions the reference platform uses. Each optional one is detected, not
-- assumed: pg_available_extensions says what the host has installed, and a
-- failed CREATE EXTENSION (e.g. timescaledb that is installed but not in
-- shared_preload_libraries) falls back with a NOTICE instead of failing.
--
-- pg_stat_statements: creating the extension works without preloading; only
-- reading its view needs shared_preload_libraries (the platform preloads it).

CREATE EXTENSION IF NOT EXISTS pgcrypto;

DO $$
DECLARE
    ext text;
BEGIN
    FOREACH ext IN ARRAY ARRAY['pg_stat_statements', 'postgis', 'timescaledb'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = ext) THEN
            RAISE NOTICE 'extension % is not installed on this host; taking its fallback', ext;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('CREATE EXTENSION IF NOT EXISTS %I', ext);
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'extension % could not be created (%); taking its fallback', ext, SQLERRM;
        END;
    END LOOP;
END
$$;
