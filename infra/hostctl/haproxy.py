"""HAProxy in front of the Patroni nodes, and its stats socket.

The socket tells which servers HAProxy itself considers up, which is what a
planned switchover must wait for before PgBouncer resumes: Patroni's REST
answer changes first, HAProxy follows within one check interval.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ProcessError
from infra.hostctl.files import make_dir, write_file
from infra.hostctl.foreground import ForegroundServer, wait_for
from infra.hostctl.net import port_open
from infra.hostctl.proc import run

HAPROXY = "/usr/sbin/haproxy"


@dataclass(frozen=True)
class HaProxy:
    config_file: Path
    stats_socket: Path
    host: str
    port: int

    @property
    def daemon(self) -> ForegroundServer:
        # -db: stay in the foreground (ForegroundServer detaches it); -W would fork a master.
        return ForegroundServer(argv=(HAPROXY, "-db", "-f", str(self.config_file)),
                      pid_file=self.config_file.with_suffix(".pid"),
                      log_file=self.config_file.with_suffix(".log"))

    def write_config(self, text: str) -> None:
        make_dir(self.config_file.parent, 0o700)
        write_file(self.config_file, text, 0o600)

    def check_config(self) -> None:
        run([HAPROXY, "-c", "-q", "-f", str(self.config_file)],
                  what=f"haproxy -c of {self.config_file}")

    def start(self, timeout: float = 15.0) -> None:
        if self.daemon.is_running():
            return
        make_dir(self.stats_socket.parent, 0o700)
        self.daemon.start()
        try:
            wait_for(lambda: port_open(self.host, self.port), timeout=timeout,
                       what=f"haproxy on {self.host}:{self.port}")
        except ProcessError as exc:
            raise ProcessError(f"{exc}; log: {self.daemon.log_tail()}") from None

    def stop(self) -> None:
        self.daemon.stop()

    def servers_up(self, backend: str = "primary") -> list[str]:
        """Server names HAProxy has UP in `backend` (its `show stat` CSV)."""
        return [r["svname"] for r in self._servers(backend)
                if str(r.get("status", "")).startswith("UP")]

    def wait_checked(self, timeout: float = 30.0) -> None:
        """Until every server has had a health check and one leader is UP.

        HAProxy counts servers as up before their first check, so right after a
        start the read-write port could reach a replica.
        """
        def ready() -> bool:
            rows = self._servers("primary")
            checked = rows and all(r.get("check_status") not in ("", "INI", None)
                                   for r in rows)
            return bool(checked) and len(self.servers_up("primary")) == 1

        try:
            wait_for(ready, timeout=timeout, interval=0.1,
                       what=f"HAProxy {self.config_file}: every server checked, one leader up")
        except ProcessError as exc:
            raise ProcessError(f"{exc}; log: {self.daemon.log_tail()}") from None

    def _servers(self, backend: str) -> list[dict[str, str]]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(str(self.stats_socket))
                s.sendall(b"show stat\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return []
        lines = data.decode(errors="replace").splitlines()
        if not lines:
            return []
        header = lines[0].lstrip("# ").split(",")
        out = []
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND",
                                                                          "BACKEND"):
                out.append(row)
        return out
