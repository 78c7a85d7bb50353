"""Dynamic provider: the local stack's dead-leader fence (infra/hostctl/fence.py).

Made by the local backend only with `ha.manager: patroni` (docs/ha.md, "The fence"),
after the Patroni members, so `destroy` stops it before them. It is one supervised
daemon (infra/hostctl/daemon.py) in `<state>/fence`: its spec (no secrets: etcd
endpoints, TLS file paths, each member's patroni.yml path and data directory), pid
file, log, status file and record of the keys it deleted. `read` reports whether it
runs, so `pulumi refresh` (and `make up`, which refreshes) sees a killed one and the
next `up` starts it again through `update`.

The HA tests' harness (tests/ha_support.py) starts it through `daemon` and
`write_spec` too, so the benchmarks and tests run this very code.

Pickled by reference into the state like the other local providers: import without
side effects, keep the path, bump PROVIDER_VERSION on changes.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
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

from infra import render
from infra.hostctl.daemon import Daemon
from infra.hostctl.fence import STARTED
from infra.hostctl.files import make_dir, write_file

PROVIDER_VERSION = "1"
POLL = 0.5     # seconds between looks at the leader key
CONFIRM = 0.5  # seconds between the two proofs of death


def fence_props(*, prefix: str, endpoints: Sequence[str], tls: render.TlsFiles,
                members: Sequence[tuple[str, str, str]], run_dir: str,
                poll: float = POLL, confirm: float = CONFIRM) -> dict[str, Any]:
    """The provider's inputs: `members` are (name, patroni.yml path, data dir)."""
    return {"prefix": prefix, "endpoints": list(endpoints),
            "tls": {"cert_file": tls.cert_file, "key_file": tls.key_file,
                    "ca_file": tls.ca_file},
            "members": {n: {"config_file": c, "data_dir": d} for n, c, d in members},
            "poll": poll, "confirm": confirm, "run_dir": run_dir,
            "python": sys.executable, "project_dir": str(Path.cwd()),
            "running": None, "provider_version": PROVIDER_VERSION}


def spec_path(props: dict[str, Any]) -> Path:
    return Path(props["run_dir"]) / "fence.json"


def write_spec(props: dict[str, Any]) -> None:
    make_dir(Path(props["run_dir"]), 0o755)
    spec = {k: props[k] for k in ("prefix", "endpoints", "tls", "members", "poll", "confirm",
                                  "run_dir")}
    write_file(spec_path(props), json.dumps(spec, indent=1, sort_keys=True) + "\n", 0o644)


def daemon(props: dict[str, Any]) -> Daemon:
    run_dir = Path(props["run_dir"])
    return Daemon(what="dead-leader fence",
                  argv=[str(props["python"]), "-m", "infra.hostctl.fence",
                        str(spec_path(props))],
                  pid_file=run_dir / "fence.pid", log_file=run_dir / "fence.log",
                  started_marker=STARTED, cwd=Path(props.get("project_dir") or "."))


def start(props: dict[str, Any]) -> None:
    write_spec(props)
    daemon(props).start()


class FenceProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        daemon(props).stop()
        start(props)
        return CreateResult(id_=str(spec_path(props)), outs={**props, "running": True})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs={**props,
                                         "running": daemon(props).running_pid() is not None})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if k != "running" and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed) or olds.get("running") is False,
                          replaces=[], delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        daemon(olds).stop()
        start(news)
        return UpdateResult(outs={**news, "running": True})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        daemon(props).stop()
        shutil.rmtree(props["run_dir"], ignore_errors=True)


class Fence(Resource, module="local", name="Fence"):
    """The supervised fence; it holds no secret (etcd takes the platform certificate)."""

    running: pulumi.Output[bool]

    def __init__(self, name: str, props: dict[str, Any],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(FenceProvider(), name, props, opts)
