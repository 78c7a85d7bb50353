-- The tenant role's pooler login (issue #12): one SCRAM verifier, set on the role
-- and written for PgBouncer's auth_query (sql/schema/V0012) in one transaction,
-- so PgBouncer and the server never disagree and a run-time tenant logs in
-- through the pooler as soon as the apply that made its role commits.
-- Without a tenant key (${tenant_verifier} empty) the role has no password and
-- no row: it cannot log in, directly or through the pooler.

DO $$
BEGIN
    IF ${tenant_verifier:literal} <> '' THEN
        ALTER ROLE ${tenant_schema} PASSWORD ${tenant_verifier:literal};
        INSERT INTO pgplatform_auth.tenant_logins (role_name, verifier)
        VALUES (${tenant_schema:literal}, ${tenant_verifier:literal})
        ON CONFLICT (role_name) DO UPDATE SET verifier = EXCLUDED.verifier;
    END IF;
END
$$;
