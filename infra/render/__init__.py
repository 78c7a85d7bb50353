"""Pure renderers: settings in, file texts out; every file text a host receives.

Shared by every backend, so a file rendered for the local stack is the file a
Docker container or an EC2 host receives, given the same settings and paths.
One module per program the files are for; the names below keep `render.X`
working for callers.
"""

from infra.render.backup import BackupPaths, backup_schedule, pgbackrest_conf
from infra.render.patroni import (
    EtcdMember,
    HaSecrets,
    PatroniNode,
    ProxyTargets,
    dynamic_config,
    etcd_conf,
    etcd_members,
    haproxy_cfg,
    patroni_yml,
)
from infra.render.pooler import (
    PoolerPaths,
    PoolerTargets,
    pgbouncer_ini,
    pooler_users,
    userlist_txt,
)
from infra.render.postgres import (
    HostPaths,
    Standby,
    TlsFiles,
    archive_command,
    pg_hba_conf,
    pg_ident_conf,
    postgresql_conf,
    preload_libraries,
)
from infra.render.template import TEMPLATES, ini, pgquote, render

__all__ = [
    "TEMPLATES", "BackupPaths", "EtcdMember", "HaSecrets", "HostPaths", "PatroniNode",
    "PoolerPaths", "PoolerTargets", "ProxyTargets", "Standby", "TlsFiles", "archive_command",
    "backup_schedule", "dynamic_config", "etcd_conf", "etcd_members", "haproxy_cfg", "ini",
    "patroni_yml", "pg_hba_conf", "pg_ident_conf", "pgbackrest_conf", "pgbouncer_ini",
    "pgquote", "pooler_users", "postgresql_conf", "preload_libraries", "render",
    "userlist_txt",
]
