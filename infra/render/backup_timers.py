"""systemd timers for the hosts' scheduled backups: one timer and one service per type.

What the local stack's supervised scheduler (infra/backup/scheduler.py) does,
for hosts that run systemd. Each timer carries its type's cron expression
(`pg-platform:backup.schedule`) as OnCalendar lines, in UTC; cron fires when
the day of the month *or* the day of the week matches, systemd when both do,
so an expression that names both becomes two lines. A smaller type's service
is ordered after the larger ones, so a diff and an incr due with a full wait
for it instead of failing on pgBackRest's lock.
"""

from __future__ import annotations

from collections.abc import Sequence

from croniter import croniter

from infra.config import PlatformConfig
from infra.errors import RenderError
from infra.render.template import render

UNIT_DIR = "/etc/systemd/system"
ORDER = ("full", "diff", "incr")
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def unit_name(kind: str, suffix: str) -> str:
    return f"pg-platform-backup-{kind}.{suffix}"


def _values(field: Sequence[object], width: int = 0) -> str:
    if list(field) == ["*"]:
        return "*"
    if not all(isinstance(v, int) for v in field):
        raise RenderError(f"cron field values {list(field)!r}: only numbers, ranges, steps "
                          "and lists become systemd OnCalendar values")
    return ",".join(f"{v:0{width}d}" for v in sorted({int(str(v)) for v in field}))


def on_calendar(cron: str) -> list[str]:
    """systemd OnCalendar expressions (UTC) that fire exactly when `cron` does."""
    try:
        fields, _nth = croniter.expand(cron)
    except (ValueError, KeyError) as exc:
        raise RenderError(f"backup schedule {cron!r}: not a cron expression ({exc})") from None
    minute, hour, dom, month, dow = fields
    time = f"{_values(hour, 2)}:{_values(minute, 2)}:00"

    def line(days: str, day_of_month: str) -> str:
        return f"{days + ' ' if days else ''}*-{_values(month, 2)}-{day_of_month} {time} UTC"

    weekdays = "" if list(dow) == ["*"] else ",".join(
        _DAYS[d] for d in sorted({int(_values([d])) % 7 for d in dow}))
    if list(dom) != ["*"] and weekdays:
        return [line("", _values(dom, 2)), line(weekdays, "*")]
    return [line(weekdays, _values(dom, 2))]


def backup_timer_files(cfg: PlatformConfig, config_path: str, *, passfile: str | None,
                       postgres_unit: str, guard: str = "") -> dict[str, str]:
    """The units of every scheduled type, by path under /etc/systemd/system; `guard`: a
    command line the backup runs under (`GUARD -- pgbackrest ...`), which with Patroni
    lets only the leader's timer back up."""
    sched = {"full": cfg.backup.schedule.full, "diff": cfg.backup.schedule.diff,
             "incr": cfg.backup.schedule.incr}
    files: dict[str, str] = {}
    for i, kind in enumerate(ORDER):
        cron = sched[kind]
        if not cron:
            continue
        service, timer = unit_name(kind, "service"), unit_name(kind, "timer")
        after = [unit_name(k, "service") for k in ORDER[:i] if sched[k]]
        files[f"{UNIT_DIR}/{service}"] = render(
            "pgbackrest-backup.service.j2", kind=kind, stanza=cfg.backup.stanza, timer=timer,
            postgres_unit=postgres_unit, after=after, passfile=passfile,
            config_path=config_path, guard=guard)
        files[f"{UNIT_DIR}/{timer}"] = render(
            "pgbackrest-backup.timer.j2", kind=kind, stanza=cfg.backup.stanza, cron=cron,
            calendars=on_calendar(cron), service=service)
    return files


def timer_units(cfg: PlatformConfig) -> list[str]:
    """The timers a host enables (`systemctl enable --now`)."""
    sched = cfg.backup.schedule
    return [unit_name(kind, "timer") for kind, cron in
            (("full", sched.full), ("diff", sched.diff), ("incr", sched.incr)) if cron]
