"""TLS: every server and the pooler speak it, verified against the platform's own CA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.infra.conftest import connect


def all_server_dsns(outputs: dict[str, Any]) -> list[str]:
    return [outputs["primary_dsn"], *outputs["replica_dsns"]]


def test_every_server_has_ssl_on_and_verify_full_connects(outputs: dict[str, Any],
                                                          ca_file: Path) -> None:
    for dsn in all_server_dsns(outputs):
        with connect(dsn, ca_file) as conn:
            assert conn.execute("SHOW ssl").fetchone() == ("on",)
            row = conn.execute("SELECT ssl, version FROM pg_stat_ssl "
                               "WHERE pid = pg_backend_pid()").fetchone()
            assert row is not None and row[0] is True and row[1] in ("TLSv1.2", "TLSv1.3")


def test_pooler_clients_and_its_server_connections_use_tls(outputs: dict[str, Any],
                                                           ca_file: Path) -> None:
    with connect(outputs["pooler_dsn"], ca_file) as conn:
        # pg_backend_pid() here is the server connection PgBouncer opened for us.
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                           ).fetchone()
    assert row == (True,)


@pytest.mark.parametrize("target", ["primary_dsn", "pooler_dsn"])
def test_a_client_without_tls_is_refused(outputs: dict[str, Any], target: str) -> None:
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(make_conninfo(outputs[target], sslmode="disable"),
                        connect_timeout=10).close()


def test_a_client_trusting_another_ca_is_refused(outputs: dict[str, Any],
                                                 tmp_path: Path) -> None:
    from infra import tls

    other = tmp_path / "other.crt"
    other.write_text(tls.make_ca("not the platform").cert_pem)
    for target in ("primary_dsn", "pooler_dsn"):
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            psycopg.connect(make_conninfo(outputs[target], sslmode="verify-full",
                                          sslrootcert=str(other)), connect_timeout=10).close()
