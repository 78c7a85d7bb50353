"""pgp-apply's step for a host whose PostgreSQL Patroni runs (`ha.manager: patroni`).

Instead of starting, reloading or restarting pg-platform-postgresql.service, the
applier (infra/hostagent/apply.py) calls `converge` with the bundle's `patroni`
section (infra/backends/aws_ha.py, `applier_spec`):

1. etcd's unit, on the hosts that carry one: started (or restarted for a changed
   etcd.conf or unit) without waiting, since a member is ready only once a
   majority runs and the other hosts boot at the same time;
2. Patroni's unit: started, restarted for a changed unit, reloaded (SIGHUP) for a
   changed patroni.yml, which Patroni re-reads for its node-local settings;
3. wait until this node's Patroni reports `running` (it bootstraps the first
   node, or makes this replica: pgBackRest restore, then pg_basebackup);
4. on the leader only: the dynamic configuration (every PostgreSQL parameter,
   Patroni's timing and modes) is patroni.yml's `bootstrap.dcs`, which Patroni
   reads only when it bootstraps a cluster; when /config lacks any of it, it is
   PATCHed there and the members a change needs restarting are restarted,
   replicas first (infra/hostagent/patroni_api.py, the code the local stack's
   PatroniConfig runs too).

Who runs the units is the bundle's `supervisor`: systemd on prod (`Systemd`), and in a
dev container, where Patroni is the container's main process and there is no systemd,
`ContainerMain`: nothing is started or restarted from here, and a changed patroni.yml is
a reload through Patroni's own REST API (POST /reload).

Stdlib only, like the applier; cloud-init installs it beside pgp-apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

READY_TIMEOUT = 600   # a replica's first pgBackRest restore or basebackup counts too
CONFIG_TIMEOUT = 60   # the leader's /config, once it runs

Run = Callable[[Sequence[str], str | None], str]


@dataclass
class Result:
    leader: bool
    actions: list[str] = field(default_factory=list)


class Systemd:
    """Prod: the units through systemctl."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def active(self, unit: str) -> bool:
        try:
            self.run(["systemctl", "is-active", "--quiet", unit], None)
        except Exception:
            return False
        return True

    def act(self, verb: str, unit: str, block: bool = True) -> None:
        nb = [] if block or verb == "reload" else ["--no-block"]
        self.run(["systemctl", verb, *nb, unit], None)


class ContainerMain:
    """Dev: Patroni is the container's main process (infra/hostagent/container_entry.sh),
    so the container's lifetime is Patroni's: `start` is a no-op (the entry script starts
    it; `wait_running` waits for it), a reload is POST /reload on its REST API (which
    answers only once Patroni has its signal handlers, unlike an early SIGHUP, which would
    end it), and a restart is refused: that would be a container restart."""

    def __init__(self, api: ModuleType, config: str, ca_file: str) -> None:
        self.api, self.config, self.ca_file = api, config, ca_file

    def _url(self) -> str:
        return str(self.api.rest_url(self.api.load_config(self.config)))

    def active(self, unit: str) -> bool:
        return int(self.api.get(self._url(), "/patroni", self.ca_file)[0]) != 0

    def act(self, verb: str, unit: str, block: bool = True) -> None:
        if verb == "start":
            return
        if verb == "reload":
            status, text = self.api.send(self._url(), "/reload", {}, self.config, self.ca_file)
            if status not in (200, 202):
                raise self.api.PatroniApiError(f"{unit}: POST /reload: HTTP {status} {text}")
            return
        raise self.api.PatroniApiError(f"{unit}: cannot {verb} Patroni in place here: it is "
                                       "the container's main process (restart the container)")


def services(api: ModuleType, spec: dict[str, Any], run: Run) -> Systemd | ContainerMain:
    """The bundle's `supervisor`: "container" on dev, systemd otherwise."""
    if spec.get("supervisor") == "container":
        return ContainerMain(api, spec["config"], spec["ca_file"])
    return Systemd(run)


def _unit(svc: Systemd | ContainerMain, unit: str, actions: Sequence[str],
          block: bool = True) -> str:
    """What a unit's changed files need, as pgp-apply's `then` words say; the action done."""
    if not svc.active(unit):
        svc.act("start", unit, block)
        return f"start {unit}"
    if f"restart:{unit}" in actions:
        svc.act("restart", unit, block)
        return f"restart {unit}"
    if f"reload:{unit}" in actions:
        svc.act("reload", unit)
        return f"reload {unit}"
    return ""


def is_active(run: Run, unit: str) -> bool:
    return Systemd(run).active(unit)


def wait_running(api: ModuleType, url: str, ca_file: str, sleep: Callable[[float], None],
                 unit: str, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """GET /patroni until its state is `running`; its status, or the error naming the unit."""
    waited, state = 0.0, "no answer"
    while True:
        status = api.get(url, "/patroni", ca_file)[1] or {}
        state = str(status.get("state", "no answer"))
        if state == "running":
            return dict(status)
        if waited >= timeout:
            raise api.PatroniApiError(f"{unit}: Patroni at {url} is {state!r}, not running, "
                                      f"after {timeout:.0f} s; see its log (journalctl -u "
                                      f"{unit}, or the container's)")
        sleep(2)
        waited += 2


def converge_dcs(api: ModuleType, spec: dict[str, Any], url: str,
                 sleep: Callable[[float], None]) -> list[str]:
    """The leader's share: PATCH the bundle's dynamic configuration where /config lacks it."""
    config, ca = spec["config"], spec["ca_file"]
    wanted = api.load_config(config)["bootstrap"]["dcs"]
    # Right after it bootstraps, the leader answers 502 until its configuration is in the
    # DCS (seen on a loaded machine): wait for it as for `running`.
    waited = 0.0
    status, current = api.get(url, "/config", ca)
    while status == 502 and waited < CONFIG_TIMEOUT:
        sleep(1)
        waited += 1
        status, current = api.get(url, "/config", ca)
    if status != 200:
        raise api.PatroniApiError(f"Patroni GET /config at {url}: HTTP {status}"
                                  f"{f' after {waited:.0f} s' if waited else ''}")
    if not api.differs(wanted, current):
        return []
    scope = str(api.load_config(config)["scope"])
    restarted = api.apply_dynamic_config(
        [url, *[m for m in spec["members"] if m != url]], config, ca, scope, wanted,
        settle=float(wanted.get("loop_wait", 5)) + 1,
        wait=lambda name: api.wait_member(config, name, sleep=sleep), sleep=sleep)
    return ["PATCH /config", *[f"restart {name} (pending)" for name in restarted]]


def converge(api: ModuleType, spec: dict[str, Any], run: Run, actions: Sequence[str],
             sleep: Callable[[float], None]) -> Result:
    """Steps 1-4 above; `actions` are the `then` words of the files this run wrote."""
    done: list[str] = []
    svc = services(api, spec, run)
    etcd = spec.get("etcd_unit") or ""
    if etcd:
        done.append(_unit(svc, etcd, actions, block=False))
    unit = spec["unit"]
    done.append(_unit(svc, unit, actions))
    doc = api.load_config(spec["config"])
    url = api.rest_url(doc)
    status = wait_running(api, url, spec["ca_file"], sleep, unit)
    leader = str(status.get("role")) in api.LEADER_ROLES
    if leader:
        done += converge_dcs(api, spec, url, sleep)
    return Result(leader=leader, actions=[a for a in done if a])
