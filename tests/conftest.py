"""Fixtures shared by every test layer: real servers, started by the tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    FreshDatabase,
    RunningServer,
    fresh_database,
    scratch_dir,
    start_server,
)
from tests.timescale import PATHS, ensure_installed


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--ha-manager", choices=("none", "patroni"), default=None,
        help="pg-platform:ha.manager of the session's shared throw-away stack "
             "(tests/infra/throwaway.py); default: the config default")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[RunningServer]:
    """One real PostgreSQL for the session; tests isolate themselves by database."""
    with start_server() as running:
        yield running


@pytest.fixture
def fresh_db(pg_server: RunningServer) -> Iterator[FreshDatabase]:
    with fresh_database(pg_server) as db:
        yield db


@pytest.fixture(scope="session")
def ts_server() -> Iterator[RunningServer]:
    """A real PostgreSQL with TimescaleDB preloaded (installed first when missing)."""
    ensure_installed()
    with start_server(timescaledb=True) as running:
        yield running


@pytest.fixture(params=PATHS)
def platform_db(request: pytest.FixtureRequest) -> Iterator[FreshDatabase]:
    """A fresh database on each TimescaleDB path: `timescaledb` (installed and
    preloaded) and `fallback` (installed, not preloaded: pg_server's own state
    once ts_server has made sure it is installed)."""
    ensure_installed()
    server = request.getfixturevalue("ts_server" if request.param == "timescaledb"
                                     else "pg_server")
    with fresh_database(server) as db:
        yield db


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A scratch directory the postgres OS user can reach, removed afterwards."""
    path = scratch_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
