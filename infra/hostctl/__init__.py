"""Process control on this machine: the only code, with infra/backends, that starts or
signals a process.

One module per program (postgres, standby, pgbouncer, pgbackrest, exporter; with
`ha.manager: patroni` also etcd, patroni and haproxy over `daemon`, and the
dead-leader fence: fence, fence_evidence, etcd_kv),
over three shared ones: proc (commands, pid files, `wait_until`), files
(service-user-owned files) and net (ports). The names below are the ones the
local backend, the ops commands and the tests use as `hostctl.X`.
"""

from infra.hostctl.files import chown_service, make_dir, write_file
from infra.hostctl.net import free_port, port_free, port_open
from infra.hostctl.pgbouncer import PgBouncer
from infra.hostctl.postgres import PG_VERSION, Server, bin_dir, installed_versions
from infra.hostctl.proc import (
    SERVICE_USER,
    as_service_user,
    pid_from_file,
    run,
    service_cmd,
    wait_until,
)

__all__ = [
    "PG_VERSION", "SERVICE_USER", "PgBouncer", "Server", "as_service_user", "bin_dir",
    "chown_service", "free_port", "installed_versions", "make_dir", "pid_from_file",
    "port_free", "port_open", "run", "service_cmd", "wait_until", "write_file",
]
