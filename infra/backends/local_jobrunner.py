"""pg-platform's TimescaleDB job runner beside the local stack's primary.

Runs when TimescaleDB is preloaded and `pg-platform:timescaledb.job_runner` is
not `scheduler` (infra/timescaledb/jobs.py says what it does in each mode);
infra/hostctl/jobrunner.py starts and stops the process.

Pickled by reference into the state like the other local providers: import
without side effects, keep the path, bump PROVIDER_VERSION on changes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from infra.hostctl.jobrunner import pid_file, running_pid, start, stop
from infra.resource_types import keep_urn

PROVIDER_VERSION = "2"


class JobRunnerProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        stop(props)
        start(props)
        return CreateResult(id_=str(pid_file(props)), outs={**props, "running": True})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs={**props, "running": running_pid(props) is not None})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if k not in ("running", "dsn") and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed) or olds.get("running") is False,
                          replaces=[], delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        stop(olds)
        start(news)
        return UpdateResult(outs={**news, "running": True})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        stop(props)


class JobRunner(Resource, module="local", name="JobRunner"):
    """The supervised runner; `dsn` (the owner's, to the primary) stays secret."""

    def __init__(self, name: str, *, dsn: pulumi.Input[str], run_dir: str, mode: str,
                 interval: float = 30.0, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(JobRunnerProvider(), name, {
            "dsn": pulumi.Output.secret(dsn), "run_dir": run_dir, "mode": mode,
            "interval": interval, "python": sys.executable, "project_dir": str(Path.cwd()),
            "running": None, "provider_version": PROVIDER_VERSION},
            keep_urn(opts, secret=["dsn"]))
