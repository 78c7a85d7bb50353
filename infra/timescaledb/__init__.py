"""TimescaleDB on the platform: presence, policies from config, and jobs that run.

- presence: installed (files), preloaded and created, per server.
- policies: the stack's settings applied through `public.timescaledb_apply_policies`.
- resource: that as a Pulumi resource, so `pulumi preview` shows a policy change.
- jobs: every job's last status, and the supervised runner for broken schedulers.
- health: the health command's view of the jobs.
"""
