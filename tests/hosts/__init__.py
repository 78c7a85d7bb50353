"""The host tier: the prod program's rendered bootstrap, run for real on Debian root
file systems in namespaces (`make test-hosts`, docs/testing.md)."""
