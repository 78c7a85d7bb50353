"""The rows `status` shows: one per file, with its state in this database."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from infra.schema.files import Kind, Track
from infra.schema.plan import Plan


@dataclass(frozen=True)
class StatusRow:
    track: str
    version: str
    description: str
    kind: str
    state: str
    applied_at: str
    checksum: str


def rows(p: Plan, active_tenants: int) -> list[StatusRow]:
    """Files in apply order; tenant files say how many tenant schemas lack them."""
    changed = {m.ref for m in p.mismatches}
    pending = {m.ref for m in (*p.schema_pending, *p.policies_pending)}
    lacking = Counter(m.ref for w in p.tenant_work for m in w.pending)
    out: list[StatusRow] = []
    for m in p.migrations.all():
        applied = p.applied.get((m.track, m.key))
        when = applied.applied_at.strftime("%Y-%m-%d %H:%M:%S") if applied else ""
        if m.track is Track.TENANT:
            total = max(active_tenants, len(p.tenant_work))
            missing = lacking[m.ref]
            state = f"applied {total - missing}/{total} tenants"
            if m.ref in changed:
                state = "CHANGED after apply"
            elif missing:
                state = f"pending in {missing}/{total} tenants"
        elif m.ref in changed:
            state = "CHANGED after apply"
        elif m.ref in pending:
            state = "pending" if applied is None else "pending (changed)"
        else:
            state = "applied"
        out.append(StatusRow(m.track.value, m.version or "R", m.description,
                             "V" if m.kind is Kind.VERSIONED else "R", state, when,
                             m.checksum[:12]))
    for _, _, label in p.unknown:
        out.append(StatusRow("", "", label, "", "MISSING file", "", ""))
    return out


def table(status_rows: list[StatusRow]) -> str:
    """A plain aligned text table, as psql prints one."""
    head = ("track", "version", "description", "state", "applied at", "checksum")
    body = [(r.track, r.version, r.description, r.state, r.applied_at, r.checksum)
            for r in status_rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
             for row in (head, *body)]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
