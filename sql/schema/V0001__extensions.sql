-- Extensions the reference platform uses. Each optional one is detected, not
-- assumed: pg_available_extensions says what the host has installed, and a
-- failed CREATE EXTENSION falls back with a NOTICE instead of failing.
--
-- timescaledb counts only when it is installed AND in shared_preload_libraries:
-- CREATE EXTENSION of an installed but not preloaded timescaledb raises FATAL,
-- which ends the session (no EXCEPTION handler catches FATAL), so it is never
-- attempted then. (Edited after release: see CHANGELOG.md, `repair` accepts it.)
--
-- pg_stat_statements: creating the extension works without preloading; only
-- reading its view needs shared_preload_libraries (the platform preloads it).

CREATE EXTENSION IF NOT EXISTS pgcrypto;

DO $$
DECLARE
    ext text;
    preloaded boolean := EXISTS (
        SELECT 1 FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) l
        WHERE btrim(l, ' "') ~ '(^|/)timescaledb$');
BEGIN
    FOREACH ext IN ARRAY ARRAY['pg_stat_statements', 'postgis', 'timescaledb'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = ext) THEN
            RAISE NOTICE 'extension % is not installed on this host; taking its fallback', ext;
            CONTINUE;
        END IF;
        IF ext = 'timescaledb' AND NOT preloaded THEN
            RAISE NOTICE 'extension timescaledb is installed but not in shared_preload_libraries; taking its fallback';
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
