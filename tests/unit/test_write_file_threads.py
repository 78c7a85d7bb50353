"""hostctl.write_file from many threads at once, as a provider's threads write a shared file."""

from __future__ import annotations

import threading
from pathlib import Path

from infra.hostctl.files import write_file


def test_concurrent_writers_of_one_file_all_succeed_and_leave_one_whole_text(
        tmp_path: Path) -> None:
    target = tmp_path / "pgbackrest.conf"
    texts = [f"[global]\nwriter={i}\n" + "x" * 65536 for i in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(texts))

    def writer(text: str) -> None:
        start.wait()
        try:
            for _ in range(50):
                write_file(target, text, 0o640)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in texts  # one writer's whole text, never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pgbackrest.conf"]  # no leftovers
