"""The prod hosts' backup timers, checked by systemd's own tools.

`systemd-analyze calendar` computes when each rendered OnCalendar fires; those
times must be exactly croniter's for the cron expression they came from (the
local scheduler's clock). `systemd-analyze verify` loads the units the prod
primary's user-data writes. Each check is also shown to fail on a broken unit.
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import config
from infra.backends import aws_ha
from infra.backends import aws_userdata as ud
from infra.backends.host_bundle import PATRONI_UNIT, POSTGRES_UNIT
from infra.backup import schedule
from infra.render.backup_timers import on_calendar

RAW: dict[str, Any] = {
    "aws": {"region": "eu-west-1", "vpc_id": "vpc-0123456789abcdef0", "vpc_cidr": "10.0.0.0/16",
            "subnet_ids": ["subnet-0123456789abcdef0"], "ami": "ami-0123456789abcdef0",
            "package_versions": {p: "1.0-1" for p in (
                "postgresql-15", "postgresql-15-postgis-3", "timescaledb-2-postgresql-15",
                "pgbouncer", "pgbackrest", "prometheus-postgres-exporter",
                "prometheus-pgbouncer-exporter")}},
    "backup": {"s3": {"bucket": "acme-pg-backups"},
               "schedule": {"full": "30 2 1 1,4,7,10 *", "diff": "0 1 * * 1-6",
                            "incr": "*/15 * * * *"}},
}
BASE = datetime(2026, 12, 30, 22, 0, tzinfo=UTC)  # crosses a month and a year
ITERATIONS = 12


def systemd_times(expression: str, n: int) -> list[datetime]:
    proc = subprocess.run(
        ["systemd-analyze", "calendar", f"--base-time={BASE:%Y-%m-%d %H:%M:%S} UTC",
         f"--iterations={n}", expression], capture_output=True, text=True, timeout=60,
        check=False, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", proc.stdout)
    return [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in found]


def cron_times(cron: str, n: int) -> list[datetime]:
    out, t = [], BASE
    for _ in range(n):
        t = schedule.next_run(cron, t)
        out.append(t)
    return out


@pytest.mark.parametrize("cron", [
    "0 1 * * 0", "0 1 * * 1-6", "0 */4 * * *", "*/15 * * * *", "* * * * *",
    "30 2 1 1,4,7,10 *", "0 1 1 * *", "5 3 1,15 * 1",  # both days: cron's "or"
    "0 0 29 2 *", "10-20/5 8-18 * 6-8 1-5", "0 6 * * 7",
])
def test_on_calendar_fires_exactly_when_cron_does(cron: str) -> None:
    merged = sorted({t for line in on_calendar(cron) for t in systemd_times(line, ITERATIONS)})
    assert merged[:ITERATIONS] == cron_times(cron, ITERATIONS), on_calendar(cron)


def _primary_units(tmp: Path) -> list[Path]:
    """The systemd units of the prod primary, under `tmp`: user-data's, and the backup
    timers its config bundle carries."""
    cfg = config.load(RAW, "prod")
    host = ud.Host(replica=0, volume_id="vol-0123456789abcdef0",
                   secret_id="arn:aws:secretsmanager:eu-west-1:123456789012:secret:x")
    doc = yaml.safe_load(ud.user_data(cfg, host))
    units = {f["path"]: f["content"] for f in doc["write_files"]}
    units.update(ud.host_files(cfg, host, (), "10.0.0.1"))
    out = []
    for unit, content in units.items():
        name = Path(unit).name
        if unit.startswith("/etc/systemd/system/pg-platform-") and (
                name.startswith("pg-platform-backup-") or name == POSTGRES_UNIT):
            path = tmp / name
            path.write_text(content)
            out.append(path)
    return out


def _verify(units: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=str(units[0].parent))


def test_systemd_verifies_the_primary_units_and_refuses_a_broken_one(tmp_path: Path) -> None:
    tmp = tmp_path
    units = _primary_units(tmp)
    names = sorted(p.name for p in units)
    assert names == sorted({
        "pg-platform-postgresql.service",
        *[f"pg-platform-backup-{k}.{u}" for k in ("full", "diff", "incr")
          for u in ("service", "timer")]})
    proc = _verify(units)
    # verify reports unknown keys and values as warnings only: a clean unit prints nothing.
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    incr = tmp / "pg-platform-backup-incr.service"
    text = incr.read_text()
    assert "User=postgres\n" in text and "PGPASSWORD" not in text
    assert "After=pg-platform-postgresql.service pg-platform-backup-full.service " \
           "pg-platform-backup-diff.service\n" in text
    timer = (tmp / "pg-platform-backup-full.timer").read_text()
    assert "OnCalendar=*-01,04,07,10-01 02:30:00 UTC\n" in timer and "Persistent=true" in timer
    incr.write_text(text.replace("Type=oneshot", "Type=oneshoot"))
    assert "Failed to parse service type, ignoring: oneshoot" in _verify(units).stderr
    incr.write_text(re.sub(r"(?m)^ExecStart=.*\n", "", text))
    broken = _verify(units)
    assert broken.returncode != 0 and "ExecStart" in broken.stderr, broken.stderr


def test_systemd_verifies_a_patroni_replicas_guarded_backup_units(tmp_path: Path) -> None:
    """With `ha.manager: patroni` a replica host carries the timers too; each service runs
    the backup under the leader guard (infra/hostagent/leader_only.py) and requires the
    Patroni unit; systemd loads all of them without a warning."""
    raw = {**RAW, "replicas": 2, "ha": {"manager": "patroni"},
           "aws": {**RAW["aws"], "package_versions": {
               **RAW["aws"]["package_versions"],
               **{p: "1.0-1" for p in ("patroni", "etcd-server", "haproxy")}}}}
    cfg = config.load(raw, "prod")
    host = ud.Host(replica=1, volume_id="vol-0123456789abcdef1",
                   secret_id="arn:aws:secretsmanager:eu-west-1:123456789012:secret:y",
                   primary_host="10.0.0.1")
    units = dict(ud.host_files(cfg, host, ("10.0.0.2", "10.0.0.3"), "10.0.0.2"))
    units[f"{aws_ha.UNIT_DIR}/{PATRONI_UNIT}"] = aws_ha.patroni_unit(cfg)
    out = []
    for unit, content in units.items():
        name = Path(unit).name
        if name.startswith("pg-platform-backup-") or name == PATRONI_UNIT:
            (tmp_path / name).write_text(content)
            out.append(tmp_path / name)
    assert len(out) == 7, sorted(p.name for p in out)
    proc = _verify(out)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), proc.stderr
    text = (tmp_path / "pg-platform-backup-incr.service").read_text()
    assert f"ExecStart=/usr/bin/python3 {ud.LEADER_GUARD} /etc/pg-platform/patroni.yml " \
           f"{ud.TLS.ca_file} -- /usr/bin/pgbackrest " in text
    assert f"Requires={PATRONI_UNIT}\n" in text
