"""pg-platform: PostgreSQL platforms with Pulumi, and the SQL that runs on them."""
