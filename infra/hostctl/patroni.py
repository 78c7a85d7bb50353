"""Patroni processes on this machine, their REST API, and patronictl.

Patroni reads its own patroni.yml (0600, service user): the passwords it holds
never reach a process environment or a command line. Its REST API runs TLS with
the platform certificate; GET endpoints are open (HAProxy checks /primary and
/replica), changing ones need the REST password from the same file, which
patronictl reads from there too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.errors import ProcessError
from infra.hostctl import etcd
from infra.hostctl.files import make_dir, write_file
from infra.hostctl.foreground import ForegroundServer, wait_for
from infra.hostctl.net import port_open
from infra.render.postgres import TlsFiles

PATRONI = "/usr/bin/patroni"
PATRONICTL = "/usr/bin/patronictl"


def _ctx(tls: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=tls.ca_file)


@dataclass(frozen=True)
class PatroniProcess:
    name: str
    host: str
    restapi_port: int
    config_file: Path
    data_dir: Path
    tls: TlsFiles

    @property
    def daemon(self) -> ForegroundServer:
        return ForegroundServer(argv=(PATRONI, str(self.config_file)),
                      pid_file=self.config_file.with_suffix(".pid"),
                      log_file=self.config_file.with_suffix(".log"))

    @property
    def rest_url(self) -> str:
        return f"https://{self.host}:{self.restapi_port}"

    def write_config(self, text: str) -> None:
        make_dir(self.config_file.parent, 0o700)
        write_file(self.config_file, text, 0o600)

    def start(self) -> None:
        if not self.daemon.is_running():
            # Something answering, not a TIME_WAIT socket: Patroni binds with SO_REUSEADDR.
            # Right after a kill -9 the node's last PostgreSQL children (which inherited
            # the REST socket from Patroni's launcher) may still be exiting: let them.
            with contextlib.suppress(ProcessError):
                wait_for(lambda: not port_open(self.host, self.restapi_port), timeout=20,
                         what="the old REST socket closes")
            if port_open(self.host, self.restapi_port):
                raise ProcessError(f"Patroni {self.name}: REST port {self.host}:"
                                   f"{self.restapi_port} is already in use")
            # initdb and the create-replica methods accept an empty 0700 directory.
            make_dir(self.data_dir.parent, 0o755)
            if not self.data_dir.exists():
                make_dir(self.data_dir, 0o700)
            self.daemon.start()

    def reload(self) -> None:
        """Patroni re-reads patroni.yml on SIGHUP."""
        self.daemon.signal(signal.SIGHUP)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM: Patroni stops PostgreSQL (fast) and releases the leader key."""
        self.daemon.stop(timeout=timeout)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def status(self) -> dict[str, Any] | None:
        """GET /patroni: role, state, timeline, xlog; None when the API does not answer."""
        return self._get("/patroni")[1]

    def config(self) -> dict[str, Any] | None:
        """GET /config: the dynamic configuration in etcd; None when the API does not answer."""
        status, body = self._get("/config")
        return body if status == 200 else None

    def probe(self, path: str) -> int:
        """The HTTP status HAProxy would see for `path` (/primary, /replica); 0 when down."""
        return self._get(path)[0]

    def _get(self, path: str) -> tuple[int, dict[str, Any] | None]:
        try:
            with urllib.request.urlopen(self.rest_url + path, context=_ctx(self.tls),
                                        timeout=2) as resp:
                return int(resp.status), json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return int(exc.code), json.loads(exc.read() or b"{}")
            except ValueError:
                return int(exc.code), None
        except (OSError, ValueError):
            return 0, None

    def post(self, path: str, body: dict[str, Any], timeout: float = 60.0,
             method: str = "POST") -> tuple[int, str]:
        """POST (or PATCH) to the REST API with the credentials from this node's patroni.yml."""
        auth = yaml.safe_load(self.config_file.read_text())["restapi"]["authentication"]
        token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
        req = urllib.request.Request(self.rest_url + path, data=json.dumps(body).encode(),
                                     method=method, headers={
                                         "Authorization": f"Basic {token}",
                                         "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=_ctx(self.tls),
                                        timeout=timeout) as resp:
                return int(resp.status), resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")
        except OSError as exc:
            return 0, str(exc)

    def wait_initialized(self, timeout: float = 180.0) -> None:
        """Until the cluster's initialize key is in etcd: a member has begun its bootstrap
        (or the cluster exists). A member started after that never races for the key, so
        it joins as a replica: "waiting for leader to bootstrap", then it clones."""
        doc = yaml.safe_load(self.config_file.read_text())
        dcs = doc["etcd3"]
        endpoints = [f"{dcs.get('protocol', 'https')}://{h}" for h in dcs["hosts"]]
        # Patroni's own key: /<namespace>/<scope>/initialize, slashes collapsed.
        key = re.sub("/+", "/", f"/{doc.get('namespace', 'service')}/{doc['scope']}/initialize")
        wait_for(lambda: etcd.key_exists(endpoints, key, self.tls), timeout=timeout,
                 what=f"Patroni {self.name}: the cluster's initialize key in etcd",
                 interval=0.1)

    def wait_running(self, timeout: float = 90.0) -> None:
        try:
            wait_for(lambda: (self.status() or {}).get("state") == "running",
                       timeout=timeout, what=f"Patroni {self.name} running", interval=0.25)
        except ProcessError as exc:
            raise ProcessError(f"{exc}; log: {self.daemon.log_tail()}") from None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def from_config(config_file: Path) -> PatroniProcess:
    """The node a patroni.yml describes (its REST address, data and TLS files)."""
    doc = yaml.safe_load(config_file.read_text())
    host, _, port = str(doc["restapi"]["connect_address"]).rpartition(":")
    tls = TlsFiles(cert_file=doc["restapi"]["certfile"],
                          key_file=doc["restapi"]["keyfile"], ca_file=doc["ctl"]["cacert"])
    return PatroniProcess(str(doc["name"]), host, int(port), config_file,
                          Path(doc["postgresql"]["data_dir"]), tls)


def patronictl(config_file: Path, *args: str, timeout: float = 120.0) -> str:
    """Run patronictl with a node's patroni.yml; the output, or ProcessError with it."""
    proc = subprocess.run([PATRONICTL, "-c", str(config_file), *args], capture_output=True,
                          text=True, timeout=timeout, check=False, cwd="/")
    if proc.returncode != 0:
        raise ProcessError(f"patronictl {' '.join(args)} failed (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def members(config_file: Path) -> list[dict[str, Any]]:
    """`patronictl list -f json`: Member, Host, Role, State, TL, Lag in MB."""
    out: list[dict[str, Any]] = json.loads(patronictl(config_file, "list", "-f", "json"))
    return out




def leader_name(config_file: Path) -> str | None:
    for m in members(config_file):
        if m.get("Role") == "Leader":
            return str(m["Member"])
    return None


def restart_pending(config_file: Path, scope: str,
                    wait: Callable[[str], None]) -> list[str]:
    """Restart members with pending_restart: replicas first, the leader last.

    A hot standby must run with max_connections, max_wal_senders,
    max_prepared_transactions, max_locks_per_transaction and max_worker_processes at
    least as high as its primary's: raising them on the primary first would make the
    standbys stop replay with "insufficient parameter settings". `wait(member)`
    returns once the restarted member runs again. Returns the order used.
    """
    ms = members(config_file)
    lead = leader_name(config_file)
    order = [str(m["Member"]) for m in ms if m["Member"] != lead]
    if lead is not None:
        order.append(lead)
    for name in order:
        patronictl(config_file, "restart", scope, name, "--pending", "--force")
        wait(name)
    return order


def holds(current: Any, wanted: Any) -> bool:
    """True when every key of `wanted` is in `current` with the same value (recursively):
    PATCH /config merges, so keys only `current` has are left alone anyway."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(
            k in current and holds(current[k], v) for k, v in wanted.items())
    return bool(current == wanted)


def apply_dynamic_config(procs: list[PatroniProcess], scope: str, dcs: dict[str, Any],
                         settle: float) -> list[str]:
    """PATCH /config on the first member that answers, let every member apply it (one
    loop_wait, `settle` seconds), then restart those that need it in the order above.

    When the store already holds `dcs` (a first `up`: bootstrap.dcs seeded the very same
    settings) there is nothing to PATCH and nothing to wait for; a member still pending a
    restart (say, from an apply interrupted before its restarts) is restarted all the same.
    """
    current = next((c for c in (p.config() for p in procs) if c is not None), None)
    if current is None or not holds(current, dcs):
        body = ""
        for proc in procs:
            status, body = proc.post("/config", dcs, method="PATCH")
            if status == 200:
                break
        else:
            raise ProcessError(f"Patroni PATCH /config: no member accepted the change: {body}")
        time.sleep(settle)
    if not any((p.status() or {}).get("pending_restart") for p in procs):
        return []

    def wait(name: str) -> None:
        next(p for p in procs if p.name == name).wait_running(timeout=180)

    return restart_pending(procs[0].config_file, scope, wait)
