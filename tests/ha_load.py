"""A write load through the pooler that remembers every acknowledged commit.

pgbench counts transactions but cannot say which ones committed, and it aborts
a client on its first error; to prove "no acknowledged commit lost" and to time
the first write after a kill, each client here inserts (client, seq) rows in
autocommit, records the seq once the server acknowledged it, and on an error
counts it and reconnects through the same DSN.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg

DDL = ("CREATE TABLE IF NOT EXISTS ha_ledger (client int NOT NULL, seq int NOT NULL, "
       "at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (client, seq))")


@dataclass
class WriteLoad:
    dsn: str
    clients: int = 4
    acked: dict[int, list[int]] = field(default_factory=dict)
    successes: list[float] = field(default_factory=list)   # monotonic times of each ack
    failures: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> WriteLoad:
        for c in range(self.clients):
            self.acked[c] = []
            t = threading.Thread(target=self._run, args=(c,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self, client: int) -> None:
        seq = 0
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None,
                                           connect_timeout=5)
                seq += 1
                conn.execute("INSERT INTO ha_ledger (client, seq) VALUES (%s, %s)",
                             (client, seq))
                now = time.monotonic()
                with self._lock:
                    self.acked[client].append(seq)
                    self.successes.append(now)
            except psycopg.Error as exc:
                with self._lock:
                    self.failures.append((time.monotonic(), str(exc).splitlines()[0][:200]))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def first_success_after(self, t: float) -> float | None:
        with self._lock:
            return next((s for s in self.successes if s > t), None)

    def recovered_at(self, kill: float, gap: float = 1.0) -> float | None:
        """The first ack after the outage that began at `kill`: the first one after `kill`
        that follows a pause of at least `gap` seconds (commits already on the wire when
        the node died are acknowledged within milliseconds and do not count)."""
        with self._lock:
            prev = kill
            for s in self.successes:
                if s <= kill:
                    continue
                if s - prev >= gap:
                    return s
                prev = s
        return None

    def acked_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.acked.values())

    def wait_for_acks(self, more: int, timeout: float = 30.0) -> None:
        target = self.acked_count() + more
        deadline = time.monotonic() + timeout
        while self.acked_count() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load made fewer than {more} commits in {timeout:.0f}s; "
                                     f"failures: {self.failures[-3:]}")
            time.sleep(0.05)
