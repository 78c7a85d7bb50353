#!/usr/bin/python3
"""pgp-apply: converge this host to its pg-platform config bundle, in place.

The bundle (built by infra/backends/host_bundle.py) is JSON: the rendered files
with their owner, mode and what a change needs (`then`: reload or restart a
unit, reload systemd), the roles SQL (primary), the replication slots the
primary keeps, the units to enable, and a `version` that is the hash of all
of it. This program

1. writes only the files whose content, mode or owner differ (atomically);
2. reloads systemd if a unit file changed;
3. reloads PostgreSQL if its files changed, and restarts it only if a changed
   setting is `pending_restart`;
4. runs the roles SQL when it changed (a password rotation), as the break-glass
   superuser on the local socket (peer, no password);
5. creates missing slots, replaces lost ones, drops pg-platform slots of replicas
   that are gone;
6. reloads or restarts the other units whose files changed (PgBouncer after the
   roles, so new verifiers are in the database before its auth file has them);
7. enables the units and timers, records the version and reports it.

With a `patroni` section (`ha.manager: patroni`) Patroni runs PostgreSQL: steps 3
and 5 are infra/hostagent/patroni_step.py's (etcd, then Patroni, the dynamic
configuration through Patroni's REST API on the leader; slots are Patroni's),
and the roles SQL runs only where this host's node leads.

Run by pg-platform-apply.timer (pull) and by pgp-setup at first boot on prod;
in a dev container by infra/hostagent/watch.py, where there is no systemd: the
bundle's `services` then say how to act on each unit, a bundle without
`postgres` (the PgBouncer container) skips steps 3 to 5, and the status goes
to a file (`report.file`). Python 3 stdlib only, plus boto3 (Debian's
python3-boto3) to read the bundle from Secrets Manager and to report to S3.
It never prints a file's content.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import pwd
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

try:  # in the project (tests, Pulumi); on a host and in a container, the file beside this one
    from .postgres_node import SLOT, ApplyError, Postgres, Run, converge_slots, run_command
except ImportError:
    from postgres_node import (  # type: ignore[no-redef,import-not-found]  # noqa: I001
        SLOT, ApplyError, Postgres, Run, converge_slots, run_command)

__all__ = ["ApplyError", "Host", "Outcome", "bundle_version", "converge", "main", "run_command"]

FORMAT = 1
STATE_FILE = "/var/lib/pg-platform/applied.json"
# A bundle's `services` may give its own command for these (no systemd in a container).
VERBS = {"is-active": ("is-active", "--quiet"), "start": ("start",), "stop": ("stop",),
         "reload": ("reload",), "restart": ("restart",),
         "reload-or-restart": ("reload-or-restart",), "enable": ("enable", "--now")}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def bundle_version(bundle: dict[str, Any]) -> str:
    """The hash of everything in the bundle but the version itself."""
    body = {k: v for k, v in bundle.items() if k != "version"}
    return digest(json.dumps(body, sort_keys=True, separators=(",", ":")))


def check_bundle(bundle: dict[str, Any]) -> None:
    if bundle.get("format") != FORMAT:
        raise ApplyError(f"bundle format {bundle.get('format')!r}: this pgp-apply reads {FORMAT}")
    if bundle.get("version") != bundle_version(bundle):
        raise ApplyError("bundle version does not match its content")
    for slot in bundle.get("slots") or []:
        if not SLOT.match(slot):
            raise ApplyError(f"slot {slot!r}: pg-platform slots are named replica_N")
    for unit, verbs in (bundle.get("services") or {}).items():
        for verb, cmd in verbs.items():
            if (verb not in VERBS or not isinstance(cmd, list) or not cmd
                    or not all(isinstance(a, str) for a in cmd)):
                raise ApplyError(f"services.{unit}.{verb}: a verb of {sorted(VERBS)} with "
                                 "a command as a list of strings")


@dataclass
class Outcome:
    """What one run changed and did, for the log and the report."""

    version: str
    role: str = ""
    written: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    sql: bool = False
    slots: list[str] = field(default_factory=list)


@dataclass
class Host:
    """Where this host's files are (`root` is "/" except in tests) and how to run things."""

    root: Path = Path("/")
    run: Run = run_command
    state_file: str = STATE_FILE
    sleep: Callable[[float], None] = time.sleep
    # infra/hostagent/patroni_api, loaded when a bundle has a `patroni` section
    api: ModuleType | None = None
    services: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def unit(self, verb: str, name: str) -> None:
        """`systemctl VERB NAME`, or the bundle's own command for it (`services`)."""
        own = self.services.get(name, {}).get(verb)
        self.run(own if own else ["systemctl", *VERBS[verb], name], None)

    def ids(self, owner: str) -> tuple[int, int]:
        if self.root != Path("/"):
            return os.getuid(), os.getgid()  # tests: no chown to other users
        entry = pwd.getpwnam(owner)
        return entry.pw_uid, entry.pw_gid


def _differs(host: Host, item: dict[str, Any]) -> bool:
    target = host.path(item["path"])
    try:
        st = target.stat()
        current = target.read_text()
    except FileNotFoundError:
        return True
    uid, gid = host.ids(item["owner"])
    return (current != item["content"] or (st.st_mode & 0o7777) != int(item["mode"], 8)
            or (st.st_uid, st.st_gid) != (uid, gid))


def write_file(host: Host, item: dict[str, Any]) -> None:
    """Atomically: a temporary file with the final mode and owner, then rename."""
    target = host.path(item["path"])
    uid, gid = host.ids(item["owner"])
    if not target.parent.exists():
        target.parent.mkdir(parents=True, mode=0o755)
        if item.get("dir_mode"):
            os.chmod(target.parent, int(item["dir_mode"], 8))
            os.chown(target.parent, uid, gid)
    tmp = target.with_name(f".{target.name}.pgp-apply")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(item["content"])
        os.chown(tmp, uid, gid)
        os.chmod(tmp, int(item["mode"], 8))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _state(host: Host) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(host.path(host.state_file).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return loaded


def converge(bundle: dict[str, Any], host: Host, *, files_only: bool = False) -> Outcome:
    """Bring the host to `bundle`; see the module docstring for the order."""
    check_bundle(bundle)
    host.services = bundle.get("services") or {}
    out = Outcome(version=bundle["version"])
    actions: list[str] = []
    for item in sorted(bundle["files"], key=lambda i: i["path"]):
        if _differs(host, item):
            write_file(host, item)
            out.written.append(item["path"])
            actions += [a for a in item.get("then", []) if a not in actions]
    if "daemon-reload" in actions:
        host.run(["systemctl", "daemon-reload"], None)
        out.actions.append("daemon-reload")
    if files_only:
        return out
    state = _state(host)
    if not state:
        # The first full run (a new or rebuilt host, after a --files-only run wrote the
        # files): every unit gets what its files need, as if they had all just changed.
        for item in bundle["files"]:
            actions += [a for a in item.get("then", []) if a not in actions]
    primary, managed = False, _ha_units(bundle)
    if bundle.get("postgres"):   # none in a dev PgBouncer container
        pg = Postgres(host, bundle["postgres"])
        managed += (pg.spec["unit"],)
        primary = (_converge_patroni(bundle["patroni"], host, pg, actions, out)
                   if bundle.get("patroni") else _converge_postgres(host, pg, actions, out))
        out.role = "primary" if primary else "replica"
        if primary and bundle.get("sql"):
            if state.get("sql") != digest(bundle["sql"]):
                pg.script(bundle["sql"])
                out.sql = True
            if not bundle.get("patroni"):
                out.slots = converge_slots(pg, bundle.get("slots") or [])
    for action in actions:
        verb, _, name = action.partition(":")
        if verb == "reload" and f"restart:{name}" in actions:
            continue  # the restart reads the new files too
        if name and name not in managed and verb in ("reload", "restart"):
            host.unit("reload-or-restart" if verb == "reload" else "restart", name)
            out.actions.append(f"{verb} {name}")
    for name in bundle.get("enable") or []:
        host.unit("enable", name)
    # The SQL counts as run only where it ran: a Patroni replica that leads later runs it.
    sql_done = digest(bundle.get("sql") or "") if primary else state.get("sql", digest(""))
    record = {"version": bundle["version"], "sql": sql_done, "at": int(time.time())}
    target = host.path(host.state_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, sort_keys=True) + "\n")
    return out


def _ha_units(bundle: dict[str, Any]) -> tuple[str, ...]:
    ha = bundle.get("patroni") or {}
    return tuple(u for u in (ha.get("unit"), ha.get("etcd_unit")) if u)


def _patroni_modules() -> tuple[ModuleType, ModuleType]:
    """patroni_step and patroni_api: this package's in the project; on a host, the files
    cloud-init writes beside this one (so no file of the applier imports the project)."""
    if __package__:
        return (importlib.import_module(f"{__package__}.patroni_step"),
                importlib.import_module(f"{__package__}.patroni_api"))
    return importlib.import_module("patroni_step"), importlib.import_module("patroni_api")


def _converge_patroni(ha: dict[str, Any], host: Host, pg: Postgres, actions: list[str],
                      out: Outcome) -> bool:
    """etcd, Patroni and the dynamic configuration (patroni_step); whether this node leads."""
    step, api = _patroni_modules()
    api = host.api or api
    try:
        result = step.converge(api, ha, host.run, actions, host.sleep)
    except api.PatroniApiError as exc:
        raise ApplyError(str(exc)) from None
    out.actions += result.actions
    pg.wait_ready()
    if f"reload:{ha['unit']}" in actions:
        # A changed certificate: Patroni's SIGHUP reloads PostgreSQL only when its own
        # settings changed, so have the server re-read its files itself.
        pg.query("SELECT pg_reload_conf()")
    return bool(result.leader)


def _converge_postgres(host: Host, pg: Postgres, actions: list[str], out: Outcome) -> bool:
    """pg-platform-postgresql.service: started, restarted or reloaded as its files need
    (restarted after a reload only if a changed setting is pending_restart)."""
    unit = pg.spec["unit"]
    if not pg.active():
        host.unit("start", unit)
        out.actions.append(f"start {unit}")
    elif f"restart:{unit}" in actions:
        host.unit("restart", unit)
        out.actions.append(f"restart {unit}")
    elif f"reload:{unit}" in actions:
        host.unit("reload", unit)
        out.actions.append(f"reload {unit}")
        pg.wait_ready()
        pending = pg.pending_restart()
        if pending:
            host.unit("restart", unit)
            out.actions.append(f"restart {unit} ({', '.join(pending)})")
    pg.wait_ready()
    return not pg.in_recovery()


def _boto3() -> Any:
    return importlib.import_module("boto3")


def fetch(secret_id: str, region: str) -> dict[str, Any]:
    client = _boto3().client("secretsmanager", region_name=region)
    loaded: dict[str, Any] = json.loads(client.get_secret_value(SecretId=secret_id)["SecretString"])
    return loaded


def report(bundle: dict[str, Any], status: dict[str, Any]) -> None:
    """Write this host's status object, which `pulumi up` waits for (infra/backends/converge)."""
    where = bundle.get("report")
    if not where:
        return
    if where.get("file"):   # dev: a status file in a directory the machine running Pulumi reads
        target = Path(where["file"])
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(status, sort_keys=True) + "\n")
        tmp.chmod(0o644)
        os.replace(tmp, target)
        return
    client = _boto3().client("s3", region_name=where["region"])
    client.put_object(Bucket=where["bucket"], Key=where["key"],
                      Body=json.dumps(status, sort_keys=True).encode(),
                      ContentType="application/json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgp-apply", description=__doc__.splitlines()[0])
    parser.add_argument("--secret-id", help="the host's bundle in Secrets Manager")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", ""))
    parser.add_argument("--bundle-file", help="read the bundle from this file (dev, tests)")
    parser.add_argument("--files-only", action="store_true",
                        help="write files and reload systemd only (first boot, before initdb)")
    parser.add_argument("--report-setup-failure", metavar="MESSAGE",
                        help="report that pgp-setup failed (it retries); `pulumi up` shows it")
    parser.add_argument("--state-file", default=STATE_FILE,
                        help="where the applied version is recorded (tests)")
    args = parser.parse_args(argv)
    if args.bundle_file:
        bundle = json.loads(Path(args.bundle_file).read_text())
    elif args.secret_id:
        bundle = fetch(args.secret_id, args.region)
    else:
        parser.error("give --secret-id or --bundle-file")
    name = bundle.get("host", "?")
    if args.report_setup_failure:
        report(bundle, {"host": name, "version": bundle.get("version"), "ok": False,
                        "phase": "setup", "error": args.report_setup_failure[:1000],
                        "at": int(time.time())})
        return 0
    try:
        out = converge(bundle, Host(state_file=args.state_file), files_only=args.files_only)
    except (ApplyError, OSError, KeyError) as exc:
        print(f"pgp-apply: {name}: {exc}", file=sys.stderr)
        if not args.files_only:
            report(bundle, {"host": name, "version": bundle.get("version"), "ok": False,
                            "error": str(exc)[:1000], "at": int(time.time())})
        return 1
    print(f"pgp-apply: {name}: version {out.version[:12]}; wrote {len(out.written)} file(s) "
          f"{' '.join(out.written)}; {'; '.join(out.actions) or 'no restarts'}"
          f"{'; roles SQL' if out.sql else ''}{'; ' + ', '.join(out.slots) if out.slots else ''}")
    if not args.files_only:
        report(bundle, {"host": name, "version": out.version, "ok": True, "error": "",
                        "role": out.role, "at": int(time.time())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
