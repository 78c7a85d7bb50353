"""The fencing-confirmed dead-leader detector of the local stack (docs/ha.md, "The fence").

After a kill -9 of the leader node nothing deletes Patroni's leader key: it lives on
its etcd lease for up to `ttl` seconds, and no replica may promote meanwhile. On the
local stack every node runs on this kernel, so the leader's death is observable: this
daemon polls the leader key and, when both its Patroni and its PostgreSQL are proven
absent (infra/hostctl/fence_evidence.py) twice, `confirm` seconds apart, it deletes the
key in one etcd transaction that compares the value and mod_revision it read (and the
member key's mod_revision), as Patroni itself releases the key on a clean shutdown.
The synchronous standby, woken by its watch, then takes over at once.

It never acts when anything is unknown: etcd not answering, the dynamic configuration
unreadable or paused (maintenance mode), a leader that is not one of its members, an
unreadable process, or any process of the member existing (stopped or hung included).

    python -m infra.hostctl.fence SPEC.json

SPEC (no secrets; written by infra/backends/local_fence.py): `prefix` (Patroni's
/<namespace>/<scope>), `endpoints`, `tls` {cert_file, key_file, ca_file}, `members`
{name: {config_file, data_dir}}, `poll`, `confirm`, `run_dir` (its status file and
its record of fences).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.hostctl.daemon import stop_on_signals
from infra.hostctl.etcd_kv import EtcdKV, EtcdUnavailable
from infra.hostctl.fence_evidence import Evidence, scan
from infra.render.postgres import TlsFiles

logger = logging.getLogger("pg-platform.fence")
STARTED = "fence started"
STATUS = "fence.status.json"
RECORD = "fences.jsonl"


@dataclass(frozen=True)
class Member:
    config_file: str
    data_dir: str


@dataclass(frozen=True)
class Spec:
    prefix: str
    endpoints: tuple[str, ...]
    tls: TlsFiles
    members: dict[str, Member]
    poll: float
    confirm: float
    run_dir: Path

    @classmethod
    def load(cls, path: Path) -> Spec:
        doc = json.loads(path.read_text())
        return cls(prefix=doc["prefix"].rstrip("/"), endpoints=tuple(doc["endpoints"]),
                   tls=TlsFiles(**doc["tls"]),
                   members={n: Member(m["config_file"], m["data_dir"])
                            for n, m in doc["members"].items()},
                   poll=float(doc["poll"]), confirm=float(doc["confirm"]),
                   run_dir=Path(doc["run_dir"]))


@dataclass(frozen=True)
class Decision:
    acted: bool          # the leader key was deleted
    text: str            # what was seen and why it did (not) act; no secrets
    leader: str | None = None
    mod_revision: int | None = None


Scan = Callable[[Member], Evidence]


def _scan(m: Member) -> Evidence:
    return scan(m.config_file, m.data_dir)


def _paused(kv: EtcdKV, prefix: str) -> str | None:
    """Why the cluster's state forbids acting (paused, or its /config unreadable)."""
    config = kv.get(f"{prefix}/config")
    if config is None:
        return "the cluster's /config is missing"
    try:
        doc = json.loads(config.value)
    except ValueError:
        return "the cluster's /config is not JSON"
    if not isinstance(doc, dict):
        return "the cluster's /config is not an object"
    if doc.get("pause"):
        return "the cluster is paused (maintenance mode)"
    return None


def decide(spec: Spec, kv: EtcdKV, evidence: Scan = _scan,
           sleep: Callable[[float], None] = time.sleep) -> Decision:
    """One look at the leader; delete its key only if its death is proven."""
    key = f"{spec.prefix}/leader"
    try:
        lead = kv.get(key)
        if lead is None:
            return Decision(False, "no leader key")
        name = lead.value.decode(errors="replace")
        seen = f"leader {name} (mod_revision {lead.mod_revision})"
        member = spec.members.get(name)
        if member is None:
            return Decision(False, f"{seen}: not a member this fence knows; not acting",
                            name, lead.mod_revision)
        first = evidence(member)  # local and cheap: the common case ends here
        if not first.dead:
            return Decision(False, f"{seen}: {first.describe()}; not acting", name,
                            lead.mod_revision)
        why = _paused(kv, spec.prefix)
        if why:
            return Decision(False, f"{seen}: {why}; not acting", name, lead.mod_revision)
        sleep(spec.confirm)
        second = evidence(member)
        if not second.dead:
            return Decision(False, f"{seen}: gone, then {second.describe()} "
                            f"{spec.confirm}s later; not acting", name, lead.mod_revision)
        again = kv.get(key)
        if again != lead:
            return Decision(False, f"{seen}: the key changed while confirming; not acting",
                            name, lead.mod_revision)
        why = _paused(kv, spec.prefix)
        if why:
            return Decision(False, f"{seen}: {why}; not acting", name, lead.mod_revision)
        member_key = f"{spec.prefix}/members/{name}"
        mkv = kv.get(member_key)
        # The last look, right before the transaction: a Patroni or postmaster started
        # after it needs far longer than the transaction's milliseconds before it could
        # read etcd, and its first write (its member key) would fail the compare.
        looked = time.monotonic()
        last = evidence(member)
        if not last.dead:
            return Decision(False, f"{seen}: {last.describe()} at the last look; "
                            "not acting", name, lead.mod_revision)
        deleted = kv.delete_if_unchanged(key, lead.value, lead.mod_revision,
                                         [(member_key, mkv.mod_revision if mkv else 0)])
        window = time.monotonic() - looked  # the last look to etcd's answer
    except EtcdUnavailable as exc:
        return Decision(False, f"etcd did not answer ({str(exc)[:300]}); not acting")
    if not deleted:
        return Decision(False, f"{seen}: proven dead, but the compare-and-delete was refused "
                        "(a key changed since it was read); not acting", name,
                        lead.mod_revision)
    return Decision(True, f"{seen}: proven dead twice {spec.confirm}s apart ({last.describe()}"
                    f"); deleted the leader key {window * 1000:.0f} ms after the last look",
                    name, lead.mod_revision)


def _write_status(spec: Spec, polls: int, d: Decision) -> None:
    """The last decision and a poll count, replaced atomically (tests and operators)."""
    tmp = spec.run_dir / f".{STATUS}.tmp"
    tmp.write_text(json.dumps({"polls": polls, "at": time.time(), "leader": d.leader,
                               "mod_revision": d.mod_revision, "decision": d.text}))
    os.replace(tmp, spec.run_dir / STATUS)


def _record(spec: Spec, d: Decision) -> None:
    with open(spec.run_dir / RECORD, "a") as out:
        out.write(json.dumps({"at": time.time(), "leader": d.leader,
                              "mod_revision": d.mod_revision, "decision": d.text}) + "\n")


def _gist(text: str) -> str:
    """A decision without its pids: backends come and go, the decision stays the same."""
    return re.sub(r"pid [0-9,…]+", "pid", text)


def run(spec: Spec, stop: threading.Event) -> None:
    kv = EtcdKV(spec.endpoints, spec.tls)
    polls, last = 0, ""
    while not stop.is_set():
        started = time.monotonic()
        d = decide(spec, kv)
        polls += 1
        if d.acted or "refused" in d.text:
            _record(spec, d)
        if d.acted or _gist(d.text) != last:  # each change of what it sees, not every poll
            logger.info("%s", d.text)
            last = _gist(d.text)
        _write_status(spec, polls, d)
        stop.wait(max(0.0, spec.poll - (time.monotonic() - started)))


def main(argv: list[str]) -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    if len(argv) != 1:
        print("usage: python -m infra.hostctl.fence SPEC.json", file=sys.stderr)
        return 2
    spec = Spec.load(Path(argv[0]))
    stop = threading.Event()
    stop_on_signals(stop)
    logger.info("%s: watching %s/leader for members %s (poll %ss, confirm %ss)", STARTED,
                spec.prefix, ", ".join(sorted(spec.members)), spec.poll, spec.confirm)
    run(spec, stop)
    logger.info("fence stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
