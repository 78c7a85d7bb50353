"""`pulumi up` waits until every host has applied its new config bundle.

Hosts pull their bundle (pg-platform-apply.timer) and report the version they
applied, or the error that stopped them, as a small JSON object in the backup
bucket (`pg-platform-status/<stack>/<host>.json`, written by pgp-apply). This
dynamic resource changes whenever any host's bundle version changes, and its
create/update polls those objects until each host reports the expected
version. It fails naming the host: the one that reported an error (with it),
or the ones still on an older version when the timeout passes. Then, with
`dsn` set, it waits for the primary to accept a verified TLS login as the
owner role, which is what the schema step does next.

Dev containers report the same way to a status file in a directory the machine
running Pulumi shares with each container (infra/backends/docker_delivery.py);
`ContainersConverged` waits for those with the same loop, through `FileStatus`.

Under Pulumi's mocks it is only a node of the graph.
"""

from __future__ import annotations

import importlib
import io
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pulumi
from psycopg.conninfo import conninfo_to_dict
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from infra.errors import ProcessError
from infra.resource_types import keep_urn

PROVIDER_VERSION = "1"
STATUS_PREFIX = "pg-platform-status"
POLL_SECONDS = 10
PROD_HINT = ("Each host pulls it every minute (pg-platform-apply.timer); check the host's "
             "journal (journalctl -u pg-platform-setup -u pg-platform-apply)")


def status_key(stack: str, host: str) -> str:
    return f"{STATUS_PREFIX}/{stack}/{host}.json"


class FileStatus:
    """Status files read the way `wait_for_hosts` reads S3: Bucket a directory, Key a path
    below it; a missing file is S3's NoSuchKey."""

    class NoSuchKey(Exception):
        pass

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        try:
            return {"Body": io.BytesIO((Path(Bucket) / Key).read_bytes())}
        except FileNotFoundError:
            raise self.NoSuchKey(Key) from None


def _read_status(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # boto3's NoSuchKey and friends
        if "NoSuchKey" in type(exc).__name__ or "NoSuchKey" in str(exc) or "404" in str(exc):
            return None
        raise
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def wait_for_hosts(props: dict[str, Any], *, client: Any = None,
                   sleep: Any = time.sleep, clock: Any = time.monotonic) -> None:
    """Poll until every host reports its version; raise naming the host otherwise."""
    if client is None and props.get("files"):
        client = FileStatus()
    elif client is None:
        client = importlib.import_module("boto3").client("s3", region_name=props["region"])
    key_format = props.get("key_format") or f"{STATUS_PREFIX}/{{stack}}/{{host}}.json"
    hint = props.get("hint") or PROD_HINT
    deadline = clock() + float(props["timeout_seconds"])
    pending = dict(props["versions"])
    last: dict[str, str] = {}
    while pending:
        for host, version in list(pending.items()):
            key = key_format.format(stack=props["stack"], host=host)
            status = _read_status(client, props["bucket"], key)
            if status is None:
                last[host] = "no report yet"
                continue
            if status.get("version") == version and status.get("ok"):
                del pending[host]
            elif status.get("version") == version and status.get("phase") == "setup":
                # pgp-setup retries by itself (a replica waiting for its primary, a
                # mirror down): keep waiting, and name the error if time runs out.
                last[host] = f"setup failing: {status.get('error')}"
            elif status.get("version") == version:
                raise ProcessError(f"host {host} failed to apply bundle {version[:12]}: "
                                   f"{status.get('error')}. {hint}")
            else:
                last[host] = f"still on {str(status.get('version'))[:12]}"
        if not pending:
            break
        if clock() >= deadline:
            named = ", ".join(f"{h} ({last.get(h, 'no report')})" for h in sorted(pending))
            raise ProcessError(
                f"hosts did not apply their new bundle within {props['timeout_seconds']} s: "
                f"{named}. {hint}")
        sleep(POLL_SECONDS)


def wait_for_login(dsn: str, timeout: float, *, sleep: Any = time.sleep,
                   clock: Any = time.monotonic) -> None:
    """Retry a TLS login until it works or `timeout` passes; the error names the host."""
    deadline = clock() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=10) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if clock() >= deadline:
                info = conninfo_to_dict(dsn)
                raise ProcessError(
                    f"the primary at {info.get('host')}:{info.get('port')} did not accept a "
                    f"TLS login as {info.get('user')} within {timeout:.0f} s: "
                    f"{str(exc).strip()[:300]}. The machine running Pulumi needs a route to "
                    "the hosts' private addresses (docs/day2.md)") from None
            sleep(POLL_SECONDS)


class ConvergedProvider(ResourceProvider):
    def _wait(self, props: dict[str, Any]) -> None:
        wait_for_hosts(props)
        if props.get("dsn"):
            wait_for_login(props["dsn"], float(props["timeout_seconds"]))

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._wait(props)
        return CreateResult(id_=f"converged-{props['stack']}", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._wait(news)
        return UpdateResult(outs=news)


class HostsConverged(Resource, module="hosts", name="Converged"):
    """Done when every host in `versions` (host name to bundle version) applied it."""

    def __init__(self, name: str, *, stack: str, bucket: pulumi.Input[str], region: str,
                 versions: pulumi.Input[dict[str, str]], dsn: pulumi.Input[str] | None = None,
                 timeout_seconds: int = 1800,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ConvergedProvider(), name,
                         {"stack": stack, "bucket": bucket, "region": region,
                          "versions": versions, "dsn": dsn, "timeout_seconds": timeout_seconds,
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["dsn"]))


class ContainersConverged(Resource, module="docker", name="Converged"):
    """Done when every dev container in `versions` (name to bundle version) has applied it,
    as its status file under `status_dir` (`<status_dir>/<name>/status/status.json`) says."""

    def __init__(self, name: str, *, stack: str, status_dir: str, prefix: str,
                 versions: pulumi.Input[dict[str, str]], dsn: pulumi.Input[str] | None = None,
                 timeout_seconds: int = 900,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        hint = (f"Each container applies a new bundle within seconds (infra/hostagent/"
                f"watch.py); see `docker logs {prefix}-<name>`")
        super().__init__(ConvergedProvider(), name,
                         {"stack": stack, "bucket": status_dir, "files": True,
                          "key_format": "{host}/status/status.json", "hint": hint,
                          "versions": versions, "dsn": dsn, "timeout_seconds": timeout_seconds,
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["dsn"]))
