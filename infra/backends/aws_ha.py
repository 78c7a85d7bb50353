"""Prod with `ha.manager: patroni`: each host's Patroni and etcd files, in its bundle.

Both files reach a host in its own config bundle (infra/backends/aws_bundle.py,
`extra_files`), never in user-data: etcd.conf lists the members, so it changes
when `replicas` does, and user-data must stay the same on day 2 (docs/day2.md);
patroni.yml holds passwords.

patroni.yml (0600, postgres) is the one file on a prod host with the break-glass
password: Patroni's pg_rewind connects to the new leader over the network as
break-glass, so peer on the socket is not enough there. No volume holds it (the
bundle writes under /etc/pg-platform on the root volume).

The texts come from infra/render/ha_hosts.py, the renderers the local stack uses.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.backends import aws_userdata as ud
from infra.backends.host_bundle import BundleFile
from infra.config import PlatformConfig
from infra.passwords import Password
from infra.render import ha_hosts
from infra.render.patroni import HaSecrets
from infra.roles import BREAK_GLASS


def ha_layout(cfg: PlatformConfig) -> ha_hosts.HostLayout:
    """Where each prod host keeps Patroni's and etcd's files."""
    return ha_hosts.HostLayout(
        conf_dir=ud.CONF_DIR, data_dir=ud.data_dir(cfg), socket_dir=ud.SOCKET_DIR,
        pgbackrest_config=ud.PGBACKREST_CONF,
        bin_dir=f"/usr/lib/postgresql/{cfg.postgres.version}/bin",
        etcd_data_dir=f"{ud.DATA_MOUNT}/etcd", hba_networks=ud.hba_networks(cfg))


def enabled(cfg: PlatformConfig) -> bool:
    return cfg.ha.manager == "patroni"


def check(cfg: PlatformConfig) -> None:
    """Refuse, before any resource, what the hosts' HA files cannot be made from
    (fewer than three database hosts for etcd's quorum, naming the key)."""
    if enabled(cfg):
        addresses = tuple(f"10.0.0.{1 + i}" for i in range(cfg.replicas + 1))
        ha_hosts.etcd_members(cfg, addresses, ha_layout(cfg))


def passwords(cfg: PlatformConfig,
              child: pulumi.ResourceOptions) -> dict[str, pulumi.Output[str]]:
    """Break-glass (Patroni's superuser and pg_rewind user) and the REST API's password;
    none without HA, so a stack without Patroni has no superuser password at all."""
    if not enabled(cfg):
        return {}
    return {"superuser": Password(f"{BREAK_GLASS}-password", opts=child).value,
            "rest": Password("patroni-restapi-password", rotation=cfg.rotation,
                             opts=child).value}


def secrets(pws: dict[str, str], replicator: str) -> HaSecrets | None:
    """Plain passwords (inside an apply) as render_ha.HaSecrets; None without HA."""
    if not pws:
        return None
    return HaSecrets(pws["superuser"], replicator, pws["rest"])


def bundle_files(cfg: PlatformConfig, replica: int, addresses: tuple[str, ...],
                 sec: HaSecrets | None) -> list[BundleFile]:
    """Host `replica`'s patroni.yml (0600, postgres) and, on the first three, etcd.conf.

    `addresses`: every database host's private address, primary first. No `then`:
    nothing on the host runs Patroni or etcd yet (docs/ha.md, "Dev and prod")."""
    if sec is None:
        return []
    lay = ha_layout(cfg)
    files = [BundleFile(path, text, "root", "0644")
             for path, text in ha_hosts.plain_files(cfg, replica, addresses, lay).items()]
    files += [BundleFile(path, text, "postgres", "0600")
              for path, text in ha_hosts.secret_files(cfg, replica, addresses, lay,
                                                      sec).items()]
    return files


def security_rules(cfg: PlatformConfig, sg: aws.ec2.SecurityGroup,
                   child: pulumi.ResourceOptions) -> None:
    """The members reach each other's etcd (client and peer) and Patroni REST ports."""
    if not enabled(cfg):
        return
    ha = cfg.ha
    for label, port in (("etcd-client", ha.etcd_client_port), ("etcd-peer", ha.etcd_peer_port),
                        ("patroni-rest", ha.restapi_port)):
        aws.vpc.SecurityGroupIngressRule(
            f"{label}-from-members", security_group_id=sg.id, ip_protocol="tcp",
            from_port=port, to_port=port, referenced_security_group_id=sg.id,
            description=f"{label} between members", opts=child)
        aws.vpc.SecurityGroupEgressRule(
            f"{label}-to-members", security_group_id=sg.id, ip_protocol="tcp",
            from_port=port, to_port=port, referenced_security_group_id=sg.id,
            description=f"{label} between members", opts=child)
