-- The application role: it logs in through PgBouncer, owns nothing and never
-- bypasses row-level security. The platform's backend normally creates it
-- with a password; this creates it (without login) where it does not exist
-- yet, so the grants and policies that name it always apply.
-- ${app_role} is an identifier placeholder the engine quotes with psycopg.sql.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${app_role:literal}) THEN
        CREATE ROLE ${app_role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;

-- PostgreSQL 15 already keeps PUBLIC from creating in schema public; say so
-- explicitly for clusters upgraded from older versions.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
