"""Dynamic provider: the local stack's backup scheduler (infra/backup/scheduler.py).

What a host's systemd timers do (infra/render/backup_timers.py), as one
supervised daemon beside the local primary: full, diff and incr backups on
`pg-platform:backup.schedule`. Its pid file lives in the stack's
`pgbackrest/` folder and its log in pgBackRest's log folder. `read` reports
whether it runs, so `pulumi refresh` (and `make up`, which refreshes) brings a
stopped one back through `update`; an unchanged one is left running across
`make up` re-runs.

The dev stack uses the same resource on the Docker host (infra/backends/
docker.py): `exec_prefix` (`docker exec -u postgres <primary container>`) makes
the loop run pgBackRest in the primary container, `config_path` being the path
there; `env` passes the Docker CLI's engine selection (DOCKER_HOST and the like,
never a secret) to the daemon, whose environment is otherwise only PATH and LANG.

Pickled by reference into the state like the other local providers: import
without side effects, keep the path, bump PROVIDER_VERSION on changes.
"""

from __future__ import annotations

import shlex
import shutil
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

from infra.hostctl.daemon import Daemon
from infra.resource_types import keep_urn

PROVIDER_VERSION = "1"
STARTED = "backup scheduler started"  # infra/backup/scheduler.py prints it when it is up


def daemon(props: dict[str, Any]) -> Daemon:
    run_dir = Path(props["run_dir"])
    argv = [str(props["python"]), "-m", "infra.backup.scheduler",
            f"--config={props['config_path']}", f"--stanza={props['stanza']}",
            f"--state-file={run_dir / 'backup-scheduler.state'}",
            *[f"--{kind}={props['schedule'].get(kind) or ''}" for kind in ("full", "diff", "incr")]]
    if props.get("exec_prefix"):
        argv.append(f"--exec-prefix={shlex.join(props['exec_prefix'])}")
    return Daemon(what="backup scheduler", argv=argv,
                  pid_file=run_dir / "backup-scheduler.pid",
                  log_file=Path(props["log_path"]) / "backup-scheduler.log",
                  started_marker=STARTED, cwd=Path(props.get("project_dir") or "."),
                  extra_env=dict(props.get("env") or {}))


class BackupSchedulerProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        d = daemon(props)
        d.stop()
        d.start()
        return CreateResult(id_=str(d.pid_file), outs={**props, "running": True})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs={**props,
                                         "running": daemon(props).running_pid() is not None})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if k != "running" and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed) or olds.get("running") is False,
                          replaces=[], delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        daemon(olds).stop()
        daemon(news).start()
        return UpdateResult(outs={**news, "running": True})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        daemon(props).stop()
        shutil.rmtree(props["run_dir"], ignore_errors=True)  # its pid and state files


def scheduler_props(*, config_path: str, stanza: str, schedule: dict[str, str],
                    run_dir: str, log_path: str, exec_prefix: Any = None,
                    env: dict[str, str] | None = None) -> dict[str, Any]:
    """The inputs `pulumi up` gives the provider (the tests call it with the same).

    `exec_prefix` (a list, or an Output of one) and `env` only where given, so the local
    stack's inputs, and its running scheduler, stay as they were."""
    props: dict[str, Any] = {
        "config_path": config_path, "stanza": stanza, "schedule": dict(schedule),
        "run_dir": run_dir, "log_path": log_path, "python": sys.executable,
        "project_dir": str(Path.cwd()), "running": None, "provider_version": PROVIDER_VERSION}
    if exec_prefix is not None:
        props["exec_prefix"] = exec_prefix
    if env:
        props["env"] = dict(env)
    return props


class BackupScheduler(Resource, module="local", name="BackupScheduler"):
    """The supervised scheduler; it holds no secret (pgBackRest logs in by peer)."""

    def __init__(self, name: str, props: dict[str, Any],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(BackupSchedulerProvider(), name, props, keep_urn(opts))
