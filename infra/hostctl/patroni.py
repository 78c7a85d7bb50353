"""Patroni processes on this machine, their REST API, and patronictl.

Patroni reads its own patroni.yml (0600, service user): the passwords it holds
never reach a process environment or a command line. Its REST API runs TLS with
the platform certificate; GET endpoints are open (HAProxy checks /primary and
/replica), changing ones need the REST password from the same file, which
patronictl reads from there too.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

from infra.errors import ProcessError
from infra.hostagent import patroni_api as api
from infra.hostctl import etcd
from infra.hostctl.files import make_dir, write_file
from infra.hostctl.foreground import ForegroundServer, wait_for
from infra.hostctl.net import port_open
from infra.render.postgres import TlsFiles
from infra.roles import BREAK_GLASS

PATRONI = "/usr/bin/patroni"
PATRONICTL = api.PATRONICTL


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
        return api.get(self.rest_url, "/patroni", self.tls.ca_file)[1]

    def probe(self, path: str) -> int:
        """The HTTP status HAProxy would see for `path` (/primary, /replica); 0 when down."""
        return api.get(self.rest_url, path, self.tls.ca_file)[0]

    def post(self, path: str, body: dict[str, Any], timeout: float = 60.0,
             method: str = "POST") -> tuple[int, str]:
        """POST (or PATCH) to the REST API with the credentials from this node's patroni.yml."""
        return api.send(self.rest_url, path, body, str(self.config_file), self.tls.ca_file,
                        method=method, timeout=timeout)

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

    def wait_running(self, timeout: float = 90.0, *, streams_on: tuple[str, int] | None = None
                     ) -> None:
        """Until Patroni reports the node "running". `streams_on` (the node's socket
        directory and port): a new replica counts as soon as Patroni answers and the
        node streams from the leader, which comes first: Patroni marks a started
        replica "running" only after its next once-a-second pg_isready poll."""
        def ready() -> bool:
            status = self.status()
            if status is None:
                return False
            if status.get("state") == "running":
                return True
            # Asked only once PostgreSQL is starting: each refused login is a line in its
            # log, and before that (the clone) there is no server to ask.
            return (streams_on is not None and status.get("state") == "starting"
                    and streaming(*streams_on))

        try:
            wait_for(ready, timeout=timeout, what=f"Patroni {self.name} running",
                     interval=0.25)
        except ProcessError as exc:
            raise ProcessError(f"{exc}; log: {self.daemon.log_tail()}") from None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def streaming(socket_dir: str, port: int) -> bool:
    """The node's WAL receiver streams from its primary, asked on its own socket as
    break-glass by peer (pg_ident's map for this OS user): no password involved."""
    try:
        with psycopg.connect(host=socket_dir, port=port, user=BREAK_GLASS, dbname="postgres",
                             connect_timeout=2, autocommit=True) as conn:
            row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] == "streaming"


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
    try:
        return api.patronictl(str(config_file), *args, timeout=timeout)
    except api.PatroniApiError as exc:
        raise ProcessError(str(exc)) from None


def members(config_file: Path) -> list[dict[str, Any]]:
    """`patronictl list -f json`: Member, Host, Role, State, TL, Lag in MB."""
    try:
        return api.members(str(config_file))
    except api.PatroniApiError as exc:
        raise ProcessError(str(exc)) from None


def leader_name(config_file: Path) -> str | None:
    try:
        return api.leader_name(str(config_file))
    except api.PatroniApiError as exc:
        raise ProcessError(str(exc)) from None


def restart_pending(config_file: Path, scope: str,
                    wait: Callable[[str], None]) -> list[str]:
    """infra/hostagent/patroni_api.restart_pending: replicas first, the leader last."""
    try:
        return api.restart_pending(str(config_file), scope, wait)
    except api.PatroniApiError as exc:
        raise ProcessError(str(exc)) from None


def apply_dynamic_config(procs: list[PatroniProcess], scope: str, dcs: dict[str, Any],
                         settle: float) -> list[str]:
    """PATCH /config, then restart the members that need it (infra/hostagent/patroni_api,
    the code prod's host applier runs too; it skips a PATCH the store already holds)."""
    def wait(name: str) -> None:
        next(p for p in procs if p.name == name).wait_running(timeout=180)

    try:
        return api.apply_dynamic_config([p.rest_url for p in procs], str(procs[0].config_file),
                                        procs[0].tls.ca_file, scope, dcs, settle, wait)
    except api.PatroniApiError as exc:
        raise ProcessError(str(exc)) from None
