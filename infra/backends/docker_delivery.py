"""How a dev container receives its config bundle: a directory on the machine running Pulumi.

The Docker engine is local, so each container's bundle is delivered the way a
prod host's Secrets Manager secret is, but through a host directory:

    <state_dir>/docker/<container>/bundle/   0700, bind-mounted read-only at
        bundle.json                          0600  /pg-platform/bundle
        apply.py, postgres_node.py, watch.py the applier (infra/hostagent), as is
    <state_dir>/docker/<container>/status/   bind-mounted read-write at
        status.json                          /pg-platform/status (no secrets)

`ContainerBundle` writes the bundle directory; the container's main process
(infra/hostagent/watch.py) applies a new bundle version within seconds and
pgp-apply writes the status file, which `ContainersConverged` (infra/backends/
converge.py) waits for. The directory's path is the only thing the container
sees of it, so a new bundle never changes the container's inputs.

Root in the container reads the 0700 directory (it is not the owner but has
CAP_DAC_OVERRIDE); nobody else on this machine but its owner does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from infra.hostagent import apply, first_backup, patroni_api, patroni_step, postgres_node, watch
from infra.resource_types import keep_urn

PROVIDER_VERSION = "1"
ENTRY_SCRIPT = "container_entry.sh"   # a Patroni container's command (infra/hostagent)
BUNDLE_MOUNT = "/pg-platform/bundle"
STATUS_MOUNT = "/pg-platform/status"
STATUS_FILE = f"{STATUS_MOUNT}/status.json"
WATCH = f"{BUNDLE_MOUNT}/watch.py"


def agent_files() -> dict[str, str]:
    """The applier and its loop, exactly as the project holds them (prod ships the same
    apply.py in user-data), its Patroni step and the entry script of a Patroni container."""
    files = {Path(m.__file__).name: Path(m.__file__).read_text()
             for m in (apply, first_backup, patroni_api, patroni_step, postgres_node, watch)
             if m.__file__}
    files[ENTRY_SCRIPT] = (Path(watch.__file__).with_name(ENTRY_SCRIPT)).read_text()
    return files


def _write(path: Path, text: str, mode: int) -> None:
    """Atomically, created with its final mode (the bundle is never readable by others)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_bundle_dir(directory: Path, bundle: str, agent: dict[str, str]) -> None:
    """The bundle directory (0700) and status directory of one container."""
    bundle_dir, status_dir = directory / "bundle", directory / "status"
    for d, mode in ((directory, 0o700), (bundle_dir, 0o700), (status_dir, 0o755)):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(mode)
    for name, text in agent.items():
        _write(bundle_dir / name, text, 0o644)
    _write(bundle_dir / "bundle.json", bundle, 0o600)   # last: the watcher reacts to it


class ContainerBundleProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        write_bundle_dir(Path(props["directory"]), props["bundle"], props["agent"])
        return CreateResult(id_=props["directory"], outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if olds.get(k) != news.get(k)]
        replaces = ["directory"] if "directory" in changed else []
        return DiffResult(changes=bool(changed), replaces=replaces,
                          delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        write_bundle_dir(Path(news["directory"]), news["bundle"], news["agent"])
        return UpdateResult(outs=news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """After its container is gone (the container depends on this resource)."""
        shutil.rmtree(props["directory"], ignore_errors=True)


class ContainerBundle(Resource, module="docker", name="Bundle"):
    """One container's bundle directory; `version` is the bundle's (plain: a hash)."""

    directory: pulumi.Output[str]
    bundle_dir: pulumi.Output[str]
    status_dir: pulumi.Output[str]

    def __init__(self, name: str, directory: Path, bundle: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ContainerBundleProvider(), name,
                         {"directory": str(directory), "bundle": pulumi.Output.secret(bundle),
                          "agent": agent_files(), "bundle_dir": str(directory / "bundle"),
                          "status_dir": str(directory / "status"),
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["bundle"]))


def write_config_dir(directory: Path, files: dict[str, str]) -> None:
    """A container's read-only config directory (0700; files 0600): etcd's, whose image
    has no applier. `files` maps names relative to it (`tls/server.key`) to their text."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for name, text in sorted(files.items()):
        target = directory / name
        if target.parent != directory:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.parent.chmod(0o700)
        _write(target, text, 0o600)


class ConfigDirProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        write_config_dir(Path(props["directory"]), props["files"])
        return CreateResult(id_=props["directory"], outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed),
                          replaces=["directory"] if "directory" in changed else [],
                          delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        write_config_dir(Path(news["directory"]), news["files"])
        return UpdateResult(outs=news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        shutil.rmtree(props["directory"], ignore_errors=True)


class ConfigDir(Resource, module="docker", name="ConfigDir"):
    """Files for a container to bind-mount read-only; `files` is a secret (a TLS key). A
    program that reads its config only at start (etcd) sees a change at its next start."""

    directory: pulumi.Output[str]

    def __init__(self, name: str, directory: Path, files: pulumi.Input[dict[str, str]],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ConfigDirProvider(), name,
                         {"directory": str(directory), "files": pulumi.Output.secret(files),
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["files"]))
