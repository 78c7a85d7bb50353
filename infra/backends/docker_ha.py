"""Dev with `ha.manager: patroni`: each database container's Patroni and etcd files.

Uploaded into the containers like every other rendered file (infra/backends/docker.py):
etcd.conf on the first three as a plain upload, patroni.yml as a secret one.
patroni.yml holds the break-glass password, the only place dev keeps it: Patroni's
pg_rewind reaches the new leader over the network as break-glass, so peer on the
socket is not enough. It is an upload into the container's filesystem, never on a
volume. The texts come from infra/render/ha_hosts.py, as on prod and locally.
"""

from __future__ import annotations

import pulumi

from infra.config import DockerSettings, PlatformConfig
from infra.passwords import Password
from infra.render import TlsFiles, ha_hosts
from infra.render.patroni import HaSecrets
from infra.roles import BREAK_GLASS

PRIMARY_HOST = "primary"   # the containers' network aliases, as infra/backends/docker.py names them


def enabled(cfg: PlatformConfig) -> bool:
    return cfg.ha.manager == "patroni"


def ha_layout(cfg: PlatformConfig, settings: DockerSettings, *, conf_dir: str, data_dir: str,
              socket_dir: str, pgbackrest_config: str, home: str,
              tls: TlsFiles) -> ha_hosts.HostLayout:
    """Where each container keeps Patroni's and etcd's files; `tls` the server's own
    (the key is the 0600 copy start.sh makes, not the root-owned upload)."""
    return ha_hosts.HostLayout(
        conf_dir=conf_dir, data_dir=data_dir, socket_dir=socket_dir,
        pgbackrest_config=pgbackrest_config,
        bin_dir=f"/usr/lib/postgresql/{cfg.postgres.version}/bin",
        etcd_data_dir=f"{home}/etcd", hba_networks=(settings.network_subnet,),
        tls_files=tls)


def addresses(cfg: PlatformConfig) -> tuple[str, ...]:
    """The database containers by their network alias, primary first."""
    return (PRIMARY_HOST, *(f"replica-{i}" for i in range(1, cfg.replicas + 1)))


def check(cfg: PlatformConfig, lay: ha_hosts.HostLayout) -> None:
    """Refuse fewer than three database containers before any resource (etcd's quorum)."""
    if enabled(cfg):
        ha_hosts.etcd_members(cfg, addresses(cfg), lay)


def secrets(cfg: PlatformConfig, replicator: pulumi.Output[str],
            child: pulumi.ResourceOptions) -> pulumi.Output[HaSecrets] | None:
    """Break-glass (Patroni's superuser and pg_rewind user), the replicator's and the REST
    API's passwords; None without HA, so such a stack has no superuser password at all."""
    if not enabled(cfg):
        return None
    superuser = Password(f"{BREAK_GLASS}-password", opts=child).value
    rest = Password("patroni-restapi-password", rotation=cfg.rotation, opts=child).value
    return pulumi.Output.secret(pulumi.Output.all(superuser, replicator, rest).apply(
        lambda pw: HaSecrets(pw[0], pw[1], pw[2])))


def plain_uploads(cfg: PlatformConfig, lay: ha_hosts.HostLayout, index: int) -> dict[str, str]:
    """Container `index`'s etcd.conf (the first three), nothing without HA."""
    if not enabled(cfg):
        return {}
    return ha_hosts.plain_files(cfg, index, addresses(cfg), lay)


def secret_uploads(cfg: PlatformConfig, lay: ha_hosts.HostLayout, index: int,
                   sec: pulumi.Output[HaSecrets] | None) -> dict[str, pulumi.Output[str]]:
    """Container `index`'s patroni.yml as a secret Output; nothing without HA."""
    if sec is None:
        return {}
    text: pulumi.Output[str] = sec.apply(
        lambda s: ha_hosts.secret_files(cfg, index, addresses(cfg), lay, s)[lay.patroni_yml])
    return {lay.patroni_yml: pulumi.Output.secret(text)}


