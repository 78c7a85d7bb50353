#!/usr/bin/python3
"""Serve pgBackRest's backup ages to Prometheus, from `pgbackrest info --output=json`.

The postgres exporters log in as platform_monitor (pg_monitor only), which
cannot read files on the server (pg_read_file), so the backup metrics come from
here: this process runs as the service user that owns the repository, asks
pgBackRest itself, and serves the same metric names the alert rules and the
dashboard use (pgplatform_backup_*{type}). No database login, no secret.

It is run by the system Python with the standard library only; every scrape
reuses an answer younger than --cache-seconds, so a busy Prometheus does not
run pgBackRest more often than that.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TYPES = ("full", "diff", "incr")
HELP = {
    "count": "backups of this type in the pgBackRest repository",
    "last_completion_timestamp_seconds": "when the newest backup of this type finished (0: none)",
    "age_seconds": "seconds since the newest backup of this type finished (since 1970 when none)",
}


def backup_metrics(info: list[dict[str, Any]], stanza: str,
                   now: float) -> dict[str, dict[str, float]]:
    """metric -> type -> value, from the JSON `pgbackrest info` prints."""
    entry = next((e for e in info if e.get("name") == stanza), {})
    last = dict.fromkeys(TYPES, 0.0)
    count = dict.fromkeys(TYPES, 0.0)
    for b in entry.get("backup", []):
        kind, stop = b.get("type"), (b.get("timestamp") or {}).get("stop")
        if kind in count and stop is not None:
            count[kind] += 1
            last[kind] = max(last[kind], float(stop))
    return {"count": count, "last_completion_timestamp_seconds": last,
            "age_seconds": {k: now - v for k, v in last.items()}}


class Collector:
    def __init__(self, config: str, stanza: str, cache_seconds: float) -> None:
        self.argv = ["pgbackrest", f"--config={config}", f"--stanza={stanza}", "info",
                     "--output=json"]
        self.stanza, self.cache_seconds = stanza, cache_seconds
        self.lock = threading.Lock()
        self.cached: tuple[float, str] | None = None

    def _collect(self) -> str:
        now = time.time()
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True, timeout=60,
                                 check=True).stdout
            metrics, up = backup_metrics(json.loads(out), self.stanza, now), 1
        except (OSError, subprocess.SubprocessError, ValueError):
            metrics, up = {}, 0
        lines = ["# HELP pgplatform_backup_info_up 1 when pgbackrest info answered",
                 "# TYPE pgplatform_backup_info_up gauge", f"pgplatform_backup_info_up {up}"]
        for name, by_type in metrics.items():
            lines += [f"# HELP pgplatform_backup_{name} {HELP[name]}",
                      f"# TYPE pgplatform_backup_{name} gauge"]
            lines += [f'pgplatform_backup_{name}{{type="{t}"}} {v:.3f}' for t, v in by_type.items()]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        with self.lock:
            if self.cached is None or time.monotonic() - self.cached[0] > self.cache_seconds:
                self.cached = (time.monotonic(), self._collect())
            return self.cached[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--config", required=True, help="pgbackrest.conf")
    ap.add_argument("--stanza", required=True)
    ap.add_argument("--cache-seconds", type=float, default=15.0)
    args = ap.parse_args(argv)
    collector = Collector(args.config, args.stanza, args.cache_seconds)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = collector.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log

    ThreadingHTTPServer((args.listen, args.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
