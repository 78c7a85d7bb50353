"""Patroni's REST API and patronictl, as every stack drives them (stdlib, plus PyYAML).

One copy for all stacks: the local backend (infra/hostctl/patroni.py) and the
host applier on prod (infra/hostagent/apply.py, which cloud-init installs with
this file beside it) call these same functions. So it imports nothing from
`infra`; PyYAML is loaded lazily (Debian's patroni package depends on
python3-yaml, so it is on every host that runs Patroni).

The changing endpoints' password is read from the node's own patroni.yml
(0600) at the moment of the request: it never reaches a command line, a
process environment or a log. GET endpoints are open (HAProxy checks /primary).
"""

from __future__ import annotations

import base64
import importlib
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PATRONICTL = "/usr/bin/patronictl"
LEADER_ROLES = ("master", "primary")   # Patroni 3.0 says master, later ones primary
RUNNING = ("running", "streaming")     # patronictl list's State of a healthy member


class PatroniApiError(Exception):
    """A REST call or patronictl failed; the message has its output, never a password."""


def load_config(config_file: str) -> dict[str, Any]:
    doc: dict[str, Any] = importlib.import_module("yaml").safe_load(
        Path(config_file).read_text(encoding="utf-8"))
    return doc


def rest_url(doc: dict[str, Any]) -> str:
    """The node's REST API as the other members dial it (its connect_address)."""
    return f"https://{doc['restapi']['connect_address']}"


def get(url: str, path: str, ca_file: str, timeout: float = 2.0) -> tuple[int,
                                                                            dict[str, Any] | None]:
    """GET `path`: the HTTP status and the JSON body; (0, None) when nothing answers."""
    ctx = ssl.create_default_context(cafile=ca_file)
    try:
        with urllib.request.urlopen(url + path, context=ctx, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), json.loads(exc.read() or b"{}")
        except ValueError:
            return int(exc.code), None
    except (OSError, ValueError):
        return 0, None


def send(url: str, path: str, body: dict[str, Any], config_file: str, ca_file: str,
         method: str = "POST", timeout: float = 60.0) -> tuple[int, str]:
    """POST (or PATCH) with the REST credentials from `config_file` (a member's patroni.yml:
    every member of a cluster has the same REST password)."""
    auth = load_config(config_file)["restapi"]["authentication"]
    token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": f"Basic {token}",
                                          "Content-Type": "application/json"})
    ctx = ssl.create_default_context(cafile=ca_file)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def patronictl(config_file: str, *args: str, timeout: float = 120.0) -> str:
    """patronictl with a node's patroni.yml; its output, or PatroniApiError with it."""
    proc = subprocess.run([PATRONICTL, "-c", config_file, *args], capture_output=True,
                          text=True, timeout=timeout, check=False, cwd="/")
    if proc.returncode != 0:
        raise PatroniApiError(f"patronictl {' '.join(args)} failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def members(config_file: str) -> list[dict[str, Any]]:
    """`patronictl list -f json`: Member, Host, Role, State, TL, Lag in MB."""
    out: list[dict[str, Any]] = json.loads(patronictl(config_file, "list", "-f", "json"))
    return out


def leader_name(config_file: str) -> str | None:
    for m in members(config_file):
        if m.get("Role") == "Leader":
            return str(m["Member"])
    return None


def restart_pending(config_file: str, scope: str, wait: Callable[[str], None]) -> list[str]:
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


def wait_member(config_file: str, name: str, timeout: float = 180.0,
                sleep: Callable[[float], None] = time.sleep) -> None:
    """Until patronictl lists member `name` as running (or streaming) again."""
    waited = 0.0
    while True:
        state = next((str(m.get("State")) for m in members(config_file)
                      if m.get("Member") == name), "absent")
        if state in RUNNING:
            return
        if waited >= timeout:
            raise PatroniApiError(f"Patroni member {name}: {state!r}, not running, after "
                                  f"{timeout:.0f} s")
        sleep(1)
        waited += 1


def differs(wanted: Any, current: Any) -> bool:
    """Whether `current` lacks any of `wanted` (values compared as Patroni echoes them:
    numbers and booleans of a YAML file may come back as strings or the reverse)."""
    if isinstance(wanted, dict):
        if not isinstance(current, dict):
            return True
        return any(differs(v, current.get(k)) for k, v in wanted.items())
    if isinstance(wanted, bool) or isinstance(current, bool):
        return str(wanted).lower() != str(current).lower()
    return str(wanted) != str(current)


def apply_dynamic_config(urls: Sequence[str], config_file: str, ca_file: str, scope: str,
                         dcs: dict[str, Any], settle: float, wait: Callable[[str], None],
                         sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """PATCH /config on the first member that accepts it, let every member apply it (one
    loop_wait, `settle` seconds), then restart those that need it in the order above.
    Returns the members restarted.

    When the store already holds `dcs` (a first `up`: bootstrap.dcs seeded the very same
    settings) there is nothing to PATCH and nothing to wait for; a member still pending a
    restart (say, from an apply interrupted before its restarts) is restarted all the same.
    """
    current = next((body for status, body in (get(u, "/config", ca_file) for u in urls)
                    if status == 200), None)
    if current is None or differs(dcs, current):
        body = ""
        for url in urls:
            status, body = send(url, "/config", dcs, config_file, ca_file, method="PATCH")
            if status == 200:
                break
        else:
            raise PatroniApiError(f"Patroni PATCH /config: no member accepted the change: "
                                  f"{body}")
        sleep(settle)
    if not any((get(url, "/patroni", ca_file)[1] or {}).get("pending_restart")
               for url in urls):
        return []
    return restart_pending(config_file, scope, wait)
