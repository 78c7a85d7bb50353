-- The tenant role's pooler login (issue #12): one SCRAM verifier, set on the role
-- and written for PgBouncer's auth_query (sql/schema/V0012) in one transaction,
-- so PgBouncer and the server never disagree and a run-time tenant logs in
-- through the pooler as soon as the apply that made its role commits. Tenants
-- made before this file get the verifier of infra/schema/credentials.py here.
-- Without a tenant key (${tenant_verifier} empty) the role's password is cleared
-- (PostgreSQL takes '' as "no password") and it has no row: it cannot log in,
-- directly or through the pooler. Plain statements, no DO block: this runs once
-- per tenant, 10,000 times in bench P3b.

ALTER ROLE ${tenant_schema} PASSWORD ${tenant_verifier:literal};

INSERT INTO pgplatform_auth.tenant_logins (role_name, verifier)
SELECT ${tenant_schema:literal}, v FROM (VALUES (${tenant_verifier:literal})) AS x(v)
WHERE v <> ''
ON CONFLICT (role_name) DO UPDATE SET verifier = EXCLUDED.verifier;
