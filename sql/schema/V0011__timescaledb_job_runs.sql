-- Runs of TimescaleDB jobs made by pg-platform's supervised job runner
-- (infra/timescaledb/jobs.py), for when TimescaleDB's own background
-- scheduler cannot run them (e.g. 2.28.3 on PostgreSQL 15.20). `CALL run_job`
-- does not update timescaledb_information.job_stats, so health and the
-- exporter read the last supervised run from here. Granted to nobody.
-- Exists on both paths (with and without TimescaleDB) so readers need no check.

CREATE TABLE public.timescaledb_job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      integer NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    succeeded   boolean NOT NULL,
    message     text NOT NULL DEFAULT ''
);
CREATE INDEX timescaledb_job_runs_job ON public.timescaledb_job_runs (job_id, started_at DESC);
REVOKE ALL ON public.timescaledb_job_runs FROM PUBLIC;
