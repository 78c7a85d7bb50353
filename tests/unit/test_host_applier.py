"""pgp-apply's decisions: what it writes, what it reloads or restarts, and in which order.

The applier runs for real against a scratch root directory; the commands it would run
(systemctl, psql as the break-glass superuser) are recorded by a stand-in that answers
as a running server would. The same applier boots real hosts in `make test-hosts`.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from infra.backends.host_bundle import BundleFile, make
from infra.hostagent import apply, patroni_api, patroni_step, postgres_node

PG = {"unit": "pg-platform-postgresql.service", "socket_dir": "/run/postgresql", "port": 5432,
      "os_user": "postgres"}


class Commands:
    """Records commands; answers psql like a primary with `pending` restart settings."""

    def __init__(self, *, pending: str = "", slots: str = "", recovery: bool = False,
                 active: bool = True) -> None:
        self.calls: list[list[str]] = []
        self.stdin: list[str | None] = []
        self.pending, self.slots, self.recovery, self.active = pending, slots, recovery, active

    def __call__(self, cmd: Sequence[str], stdin: str | None) -> str:
        self.calls.append(list(cmd))
        self.stdin.append(stdin)
        text = " ".join(cmd)
        if "is-active" in text and not self.active:
            raise apply.ApplyError("inactive")
        if "pg_is_in_recovery" in text:
            return "t\n" if self.recovery else "f\n"
        if "pending_restart" in text:
            return self.pending + "\n"
        if "FROM pg_replication_slots" in text:
            return self.slots
        return ""

    def systemctl(self) -> list[str]:
        return [" ".join(c[1:]) for c in self.calls if c[0] == "systemctl"
                and c[1] != "is-active"]

    def sql(self) -> list[str]:
        return [c[-1] for c in self.calls if "psql" in c and "-c" in c]


def bundle(pool: int = 20, param: str = "100", password: str = "v1",
           slots: Sequence[str] = ("replica_1",)) -> dict[str, object]:
    reload_pg = ("reload:pg-platform-postgresql.service",)
    return make("primary", [
        BundleFile("/etc/pg-platform/postgresql.conf", f"max_connections = {param}\n",
                   then=reload_pg),
        BundleFile("/etc/pgbouncer/pgbouncer.ini", f"default_pool_size = {pool}\n",
                   then=("reload:pgbouncer.service",)),
        BundleFile("/etc/pgbouncer/userlist.txt", f'"app" "{password}"\n', mode="0600",
                   then=("reload:pgbouncer.service",)),
        BundleFile("/etc/systemd/system/pgbouncer.service.d/limits.conf",
                   "[Service]\nLimitNOFILE=6000\n",
                   then=("daemon-reload", "restart:pgbouncer.service")),
    ], postgres=PG, sql=f"ALTER ROLE app PASSWORD '{password}';\n", slots=slots,
        enable=["pgbouncer.service"])


def host(tmp_path: Path, commands: Commands) -> apply.Host:
    return apply.Host(root=tmp_path, run=commands, state_file="/var/lib/pg-platform/a.json",
                      sleep=lambda _s: None)


def first(tmp_path: Path, b: dict[str, object]) -> None:
    """A host after its first boot: files written, everything applied once."""
    apply.converge(b, host(tmp_path, Commands()), files_only=True)
    apply.converge(b, host(tmp_path, Commands()))


def test_first_boot_writes_files_then_applies_every_action(tmp_path: Path) -> None:
    b = bundle()
    files_only = Commands()
    out = apply.converge(b, host(tmp_path, files_only), files_only=True)
    assert len(out.written) == 4 and files_only.systemctl() == ["daemon-reload"]
    ini = tmp_path / "etc/pgbouncer/userlist.txt"
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    full = Commands()
    out = apply.converge(b, host(tmp_path, full))
    assert out.written == [] and out.sql
    # Nothing was written this time, but a first full run gives each unit what it needs.
    assert "restart pgbouncer.service" in full.systemctl()
    assert "enable --now pgbouncer.service" in full.systemctl()
    state = json.loads((tmp_path / "var/lib/pg-platform/a.json").read_text())
    assert state["version"] == b["version"]


def test_unchanged_bundle_touches_nothing(tmp_path: Path) -> None:
    first(tmp_path, bundle())
    again = Commands()
    out = apply.converge(bundle(), host(tmp_path, again))
    assert out.written == [] and not out.sql and out.actions == []
    assert again.systemctl() == ["enable --now pgbouncer.service"]   # idempotent, no restart
    assert not any("ALTER ROLE" in (s or "") for s in again.stdin)


def test_pool_size_reloads_pgbouncer_only(tmp_path: Path) -> None:
    first(tmp_path, bundle())
    c = Commands()
    out = apply.converge(bundle(pool=35), host(tmp_path, c))
    assert out.written == ["/etc/pgbouncer/pgbouncer.ini"]
    assert "reload-or-restart pgbouncer.service" in c.systemctl()
    assert not [s for s in c.systemctl() if "pg-platform-postgresql" in s]


def test_parameter_reloads_postgres_and_restarts_only_when_pending(tmp_path: Path) -> None:
    first(tmp_path, bundle())
    c = Commands()
    apply.converge(bundle(param="110"), host(tmp_path, c))
    assert c.systemctl()[:1] == ["reload pg-platform-postgresql.service"]
    assert "restart pg-platform-postgresql.service" not in c.systemctl()
    c = Commands(pending="max_connections")
    out = apply.converge(bundle(param="120"), host(tmp_path, c))
    assert c.systemctl()[:2] == ["reload pg-platform-postgresql.service",
                                 "restart pg-platform-postgresql.service"]
    assert "restart pg-platform-postgresql.service (max_connections)" in out.actions
    assert not [s for s in c.systemctl() if "pgbouncer" in s and "enable" not in s]


def test_rotation_runs_sql_before_pgbouncer_reads_the_new_userlist(tmp_path: Path) -> None:
    first(tmp_path, bundle())
    c = Commands()
    out = apply.converge(bundle(password="v2"), host(tmp_path, c))
    assert out.sql
    sql_at = next(i for i, s in enumerate(c.stdin) if s and "ALTER ROLE" in s)
    reload_at = next(i for i, cmd in enumerate(c.calls)
                     if cmd[:2] == ["systemctl", "reload-or-restart"])
    assert sql_at < reload_at
    psql = c.calls[sql_at]
    assert psql[:4] == ["runuser", "-u", "postgres", "--"] and "-f" in psql
    assert "v2" not in " ".join(psql)    # the SQL goes on stdin, never on the command line


def test_slots_created_lost_replaced_removed_dropped(tmp_path: Path) -> None:
    first(tmp_path, bundle())
    c = Commands(slots="replica_1:lost:f\nreplica_2:reserved:f\nother:reserved:f\n")
    out = apply.converge(bundle(slots=("replica_1", "replica_3"), password="v3"),
                         host(tmp_path, c))
    assert out.slots == ["replaced lost replica_1", "dropped replica_2", "created replica_1",
                         "created replica_3"]
    assert not any("'other'" in s for s in c.sql())   # not pg-platform's: left alone


def test_replica_runs_no_sql_and_keeps_no_slots(tmp_path: Path) -> None:
    first(tmp_path, bundle())
    c = Commands(recovery=True)
    out = apply.converge(bundle(password="v4"), host(tmp_path, c))
    assert not out.sql and out.slots == []


def test_a_stopped_server_is_started(tmp_path: Path) -> None:
    first(tmp_path, bundle())
    c = Commands(active=False)
    apply.converge(bundle(), host(tmp_path, c))
    assert c.systemctl()[0] == "start pg-platform-postgresql.service"


def test_a_tampered_or_foreign_bundle_is_refused(tmp_path: Path) -> None:
    b = bundle()
    b["sql"] = "DROP DATABASE platform;"
    with pytest.raises(apply.ApplyError, match="version does not match"):
        apply.converge(b, host(tmp_path, Commands()))
    b = bundle()
    b["format"] = 99
    with pytest.raises(apply.ApplyError, match="format 99"):
        apply.converge(b, host(tmp_path, Commands()))


def test_a_server_that_never_comes_up_fails_with_a_message(tmp_path: Path) -> None:
    class Down(Commands):
        def __call__(self, cmd: Sequence[str], stdin: str | None) -> str:
            if "pg_isready" in cmd:
                raise apply.ApplyError("no response")
            return super().__call__(cmd, stdin)

    with pytest.raises(apply.ApplyError, match=r"not accepting connections .* after 300 s"):
        apply.converge(bundle(), host(tmp_path, Down()))


def test_main_reports_failure_and_exits_nonzero(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    b = bundle()
    b["version"] = "0" * 64
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(b))
    reports: list[dict[str, object]] = []
    monkeypatch.setattr(apply, "report", lambda _b, status: reports.append(status))
    assert apply.main(["--bundle-file", str(path)]) == 1
    assert reports and reports[0]["ok"] is False and "version" in str(reports[0]["error"])
    assert "pgp-apply: primary:" in capsys.readouterr().err
    assert "ALTER ROLE" not in json.dumps(reports)


def test_the_applier_imports_nothing_from_the_project() -> None:
    """cloud-init copies it onto the host, with Patroni's step and REST client beside it
    when Patroni runs there: stdlib (and boto3, PyYAML, lazily) only."""
    for module in (apply, postgres_node, patroni_step, patroni_api):
        text = Path(module.__file__ or "").read_text()
        assert "from infra" not in text and "import infra" not in text, module.__name__
        assert os.access(module.__file__ or "", os.R_OK)


def test_setup_failure_is_reported_as_setup(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle()))
    reports: list[dict[str, object]] = []
    monkeypatch.setattr(apply, "report", lambda _b, status: reports.append(status))
    assert apply.main(["--bundle-file", str(path), "--report-setup-failure", "line 9"]) == 0
    assert reports[0]["phase"] == "setup" and reports[0]["ok"] is False
    assert reports[0]["version"] == bundle()["version"]


def test_a_dev_pooler_bundle_has_no_postgres_and_uses_its_own_commands(tmp_path: Path) -> None:
    """The PgBouncer container: no systemd, no PostgreSQL; the bundle's `services` say how."""
    from infra import config
    from infra.backends import docker_files
    from infra.backends.aws_bundle import CloudPasswords

    cfg = config.load({"replicas": 1}, "dev")
    pw = CloudPasswords(*(f"pw-{i}" for i in range(6)))
    files = docker_files.pooler_files(cfg, docker_files.Layout("p", 5432, 1, 6432))
    b = json.loads(docker_files.pooler_bundle(cfg, {**files, **dict.fromkeys(
        docker_files.TLS_FILES, "pem")}, pw))
    assert b["postgres"] == {} and b["sql"] == "" and b["report"]["file"]
    ctl = ["bash", docker_files.PGBOUNCER_CTL]
    cmds = Commands()
    out = apply.converge(b, host(tmp_path, cmds))
    assert not any("psql" in c or "pg_isready" in " ".join(c) for c in cmds.calls)
    assert not any(c[0] == "systemctl" for c in cmds.calls)
    assert cmds.calls == [[*ctl, "reload"], [*ctl, "start"]]       # reload starts it if down
    assert out.actions == ["reload pgbouncer.service"]
    auth = tmp_path / docker_files.AUTH_FILE.lstrip("/")
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    # A new pool size: only the ini is written, PgBouncer reloaded, nothing restarted.
    cfg2 = config.load({"replicas": 1, "pooler": {"default_pool_size": 33}}, "dev")
    files2 = docker_files.pooler_files(cfg2, docker_files.Layout("p", 5432, 1, 6432))
    b2 = json.loads(docker_files.pooler_bundle(cfg2, {**files2, **dict.fromkeys(
        docker_files.TLS_FILES, "pem")}, pw))
    cmds2 = Commands()
    out2 = apply.converge(b2, host(tmp_path, cmds2))
    assert out2.written == [docker_files.POOLER_INI]
    assert cmds2.calls == [[*ctl, "reload"], [*ctl, "start"]]


def test_a_service_command_that_is_not_a_list_of_strings_is_refused(tmp_path: Path) -> None:
    b = bundle()
    b["services"] = {"pgbouncer.service": {"reload": "kill -HUP 1"}}
    b["version"] = apply.bundle_version(b)
    with pytest.raises(apply.ApplyError, match=r"services\.pgbouncer\.service\.reload"):
        apply.converge(b, host(tmp_path, Commands()))
