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
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1
STATE_FILE = "/var/lib/pg-platform/applied.json"
SLOT = re.compile(r"^replica_[0-9]+$")
READY_TIMEOUT = 300
# A bundle's `services` may give its own command for these (no systemd in a container).
VERBS = {"is-active": ("is-active", "--quiet"), "start": ("start",), "stop": ("stop",),
         "reload": ("reload",), "restart": ("restart",),
         "reload-or-restart": ("reload-or-restart",), "enable": ("enable", "--now")}

Run = Callable[[Sequence[str], str | None], str]


class ApplyError(Exception):
    """A step failed; the message names the step and the file or unit."""


def run_command(cmd: Sequence[str], stdin: str | None = None) -> str:
    """Run a command; its output is returned, its failure raised without the input."""
    proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ApplyError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: "
                         f"{proc.stderr.strip()[-500:]}")
    return proc.stdout


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


class Postgres:
    """The local server, reached as the break-glass superuser by peer on its socket."""

    def __init__(self, host: Host, spec: dict[str, Any]) -> None:
        self.host, self.spec = host, spec

    def _base(self, program: str) -> list[str]:
        return ["runuser", "-u", self.spec["os_user"], "--", program, "-h",
                self.spec["socket_dir"], "-p", str(self.spec["port"])]

    def query(self, text: str) -> str:
        return self.host.run([*self._base("psql"), "-X", "-q", "-At", "-d", "postgres",
                              "-v", "ON_ERROR_STOP=1", "-c", text], None).strip()

    def script(self, text: str) -> None:
        """A psql script on stdin: never on the command line, never in a file."""
        self.host.run([*self._base("psql"), "-X", "-q", "-d", "postgres",
                       "-v", "ON_ERROR_STOP=1", "-f", "-"], text)

    def active(self) -> bool:
        try:
            self.host.unit("is-active", self.spec["unit"])
        except ApplyError:
            return False
        return True

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        waited = 0.0
        while True:
            try:
                self.host.run([*self._base("pg_isready"), "-q"], None)
                return
            except ApplyError:
                if waited >= timeout:
                    raise ApplyError(f"{self.spec['unit']}: not accepting connections on "
                                     f"{self.spec['socket_dir']} after {timeout:.0f} s; see "
                                     f"journalctl -u {self.spec['unit']}") from None
                self.host.sleep(2)
                waited += 2

    def in_recovery(self) -> bool:
        return self.query("SELECT pg_is_in_recovery()") == "t"

    def pending_restart(self) -> list[str]:
        found = self.query("SELECT string_agg(name, ',') FROM pg_settings WHERE pending_restart")
        return [n for n in found.split(",") if n]


def converge_slots(pg: Postgres, wanted: Sequence[str]) -> list[str]:
    """Create missing slots, replace invalidated ones, drop the removed replicas' slots."""
    done: list[str] = []
    rows = pg.query("SELECT slot_name || ':' || coalesce(wal_status, '') || ':' || active "
                    "FROM pg_replication_slots WHERE slot_type = 'physical'")
    have = {}
    for line in rows.splitlines():
        name, status, flag = line.split(":")
        have[name] = (status, flag == "t")
    for name, (status, active) in sorted(have.items()):
        if SLOT.match(name) and name not in wanted and not active:
            pg.query(f"SELECT pg_drop_replication_slot('{name}')")
            done.append(f"dropped {name}")
        elif name in wanted and status == "lost" and not active:
            pg.query(f"SELECT pg_drop_replication_slot('{name}')")
            del have[name]
            done.append(f"replaced lost {name}")
    for name in wanted:
        if name not in have:
            pg.query(f"SELECT pg_create_physical_replication_slot('{name}', true)")
            done.append(f"created {name}")
    return done


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
    unit = ""
    if bundle.get("postgres"):   # none in a dev PgBouncer container
        unit = bundle["postgres"]["unit"]
        _converge_postgres(bundle, host, Postgres(host, bundle["postgres"]), state,
                           actions, out)
    for action in actions:
        verb, _, name = action.partition(":")
        if verb == "reload" and f"restart:{name}" in actions:
            continue  # the restart reads the new files too
        if name and name != unit and verb in ("reload", "restart"):
            host.unit("reload-or-restart" if verb == "reload" else "restart", name)
            out.actions.append(f"{verb} {name}")
    for name in bundle.get("enable") or []:
        host.unit("enable", name)
    record = {"version": bundle["version"], "sql": digest(bundle.get("sql") or ""),
              "at": int(time.time())}
    target = host.path(host.state_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, sort_keys=True) + "\n")
    return out


def _converge_postgres(bundle: dict[str, Any], host: Host, pg: Postgres, state: dict[str, Any],
                       actions: list[str], out: Outcome) -> None:
    """Steps 3 to 5: the server up with its new files, then (primary) roles and slots."""
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
    if not pg.in_recovery() and bundle.get("sql"):
        if state.get("sql") != digest(bundle["sql"]):
            pg.script(bundle["sql"])
            out.sql = True
        out.slots = converge_slots(pg, bundle.get("slots") or [])


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
    parser.add_argument("--state-file", default=STATE_FILE,
                        help="where the applied version is recorded (tests)")
    parser.add_argument("--files-only", action="store_true",
                        help="write files and reload systemd only (first boot, before initdb)")
    parser.add_argument("--report-setup-failure", metavar="MESSAGE",
                        help="report that pgp-setup failed (it retries); `pulumi up` shows it")
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
                        "at": int(time.time())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
