"""`python -m infra.health`: is a stack healthy, and if not, why.

It reads the stack's outputs (DSNs) and config (thresholds), probes every node,
the pooler, the backups and the schema directly, and returns a verdict with
reasons. Only the stack's outputs are needed to reach the hosts, so it works on
any stack whose hosts this machine can reach.
"""
