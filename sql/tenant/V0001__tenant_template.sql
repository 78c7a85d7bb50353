-- The tenant template: applied once to every tenant schema, in its own
-- transaction, with ${tenant_schema} set to that schema (quoted by psycopg.sql)
-- and search_path leading with it. A new tenant's schema is created in the
-- same transaction, so a failure here leaves no half-made tenant.

-- The application role works inside tenant schemas but owns nothing there.
-- Default privileges come first, so every table and sequence below (and in
-- later tenant migrations) is granted as it is created. `GRANT … ON ALL
-- TABLES IN SCHEMA` would scan all of pg_class once per tenant, which makes
-- provisioning quadratic in the tenant count (bench P3b).
GRANT USAGE ON SCHEMA ${tenant_schema} TO ${app_role};
ALTER DEFAULT PRIVILEGES IN SCHEMA ${tenant_schema}
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${app_role};
ALTER DEFAULT PRIVILEGES IN SCHEMA ${tenant_schema}
    GRANT USAGE, SELECT ON SEQUENCES TO ${app_role};

CREATE TABLE ${tenant_schema}.users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    role        text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE ${tenant_schema}.metrics_sessions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES ${tenant_schema}.users (id) ON DELETE CASCADE,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    client      text NOT NULL DEFAULT '',
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX metrics_sessions_user_started ON ${tenant_schema}.metrics_sessions (user_id, started_at DESC);

CREATE TABLE ${tenant_schema}.tool_metrics (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES ${tenant_schema}.metrics_sessions (id) ON DELETE CASCADE,
    tool        text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL CHECK (duration_ms >= 0),
    success     boolean NOT NULL DEFAULT true
);
CREATE INDEX tool_metrics_session ON ${tenant_schema}.tool_metrics (session_id);

CREATE TABLE ${tenant_schema}.dashboard_configs (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    uuid REFERENCES ${tenant_schema}.users (id) ON DELETE SET NULL,
    name        text NOT NULL,
    layout      jsonb NOT NULL DEFAULT '{}',
    is_default  boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
