"""pgbench as the benchmarks run it: passwords through PG* variables, output parsed."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from bench import common

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
_TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)
_FAILED_TX = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
# What pgbench 15 prints when a client cannot connect or is dropped.
_CONNECT_ERRORS = ("connection to server", "could not create connection", "aborted in command",
                   "could not connect")


@dataclass(frozen=True)
class Run:
    tps: float
    clients: int
    failed_connects: int
    failed_transactions: int
    command: str
    exit_code: int
    first_error: str = ""


def initialise(dsn: str, scale: int) -> None:
    """pgbench tables at `scale`, generated server-side, unless they are already there."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('public.pgbench_branches') IS NOT NULL").fetchone()
        if row and row[0]:
            have = conn.execute("SELECT count(*) FROM pgbench_branches").fetchone()
            if have and have[0] == scale:
                return
    common.run([PGBENCH, "-i", "-I", "dtGvp", "-s", str(scale), "-q"], env=common.libpq_env(dsn))


def grant_select(dsn: str, role: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers, '
                     f'pgbench_history TO "{role}"')


def bench(dsn: str, *args: str, clients: int, seconds: int, threads: int = 2,
          shown_dsn: str = "") -> Run:
    """One pgbench run; `shown_dsn` names the target in the printed command (no password)."""
    argv = [PGBENCH, "-n", "-c", str(clients), "-j", str(min(threads, clients)),
            "-T", str(seconds), *args]
    proc = common.run(argv, env=common.libpq_env(dsn), check=False, timeout=seconds * 3 + 300)
    out = proc.stdout + proc.stderr
    m = _TPS.search(proc.stdout)
    failed_tx = _FAILED_TX.search(proc.stdout)
    connects = sum(1 for line in proc.stderr.splitlines()
                   if any(s in line for s in _CONNECT_ERRORS))
    if m is None and connects == 0:
        raise RuntimeError(f"{common.shown(argv)} gave no tps (exit {proc.returncode}):\n"
                           f"{out[-2000:]}")
    shown = common.shown(["pgbench", *argv[1:]]) + (f"  # {shown_dsn}" if shown_dsn else "")
    return Run(tps=float(m.group(1)) if m else 0.0, clients=clients,
               failed_connects=connects,
               failed_transactions=int(failed_tx.group(1)) if failed_tx else 0,
               command=shown, exit_code=proc.returncode,
               first_error=next((ln for ln in proc.stderr.splitlines() if "error" in ln), ""))


def where(dsn: str) -> str:
    """host:port/db as user, for printed commands."""
    env = common.libpq_env(dsn)
    tls = f" sslmode={env['PGSSLMODE']}" if "PGSSLMODE" in env else ""
    return (f"{env.get('PGUSER')}@{env.get('PGHOST')}:{env.get('PGPORT')}/"
            f"{env.get('PGDATABASE')}{tls}")
