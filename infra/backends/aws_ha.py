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

What runs them: the bundle also carries systemd units for etcd (first three
hosts) and Patroni, which replaces pg-platform-postgresql.service, and the
applier's `patroni` section (infra/hostagent/patroni_step.py) starts etcd, then
Patroni, and sends a changed dynamic configuration to Patroni's REST API. Every
host runs HAProxy on 127.0.0.1 in front of every node, checking Patroni's
/primary and /replica (the local stack's design, docs/ha.md), and its own
PgBouncer dials that HAProxy, so each pooler follows the leader without a file
change and `pooler_dsn` lists every host's PgBouncer (infra/backends/aws.py).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from infra.backends import aws_userdata as ud
from infra.backends.host_bundle import ETCD_UNIT, PATRONI_UNIT, BundleFile
from infra.config import PlatformConfig
from infra.passwords import Password
from infra.render import ha_hosts
from infra.render.patroni import HaSecrets, ProxyTargets, haproxy_cfg
from infra.roles import BREAK_GLASS

HAPROXY_UNIT = "haproxy.service"          # Debian's unit; it checks the file (-c) first
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
UNIT_DIR = "/etc/systemd/system"


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


def etcd_unit(cfg: PlatformConfig) -> str:
    """etcd as `postgres`, its data on the data volume; notify: ready once it has quorum
    (the applier starts it without waiting: the other members boot at the same time)."""
    return ("# Rendered by pg-platform (infra/backends/aws_ha.py). Do not edit.\n"
            "[Unit]\nDescription=etcd member for Patroni (pg-platform)\n"
            "After=network-online.target\nWants=network-online.target\n"
            f"RequiresMountsFor={ud.DATA_MOUNT}\n\n"
            "[Service]\nType=notify\nUser=postgres\nGroup=postgres\n"
            f"ExecStart=/usr/bin/etcd --config-file {ha_layout(cfg).etcd_conf}\n"
            "Restart=on-failure\nRestartSec=5\nLimitNOFILE=65536\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def patroni_unit(cfg: PlatformConfig) -> str:
    """Patroni as `postgres`, instead of pg-platform-postgresql.service. KillMode=process
    (as Debian's own unit): on stop Patroni shuts PostgreSQL down itself and releases the
    leader key, rather than systemd killing the postmaster under it."""
    return ("# Rendered by pg-platform (infra/backends/aws_ha.py). Do not edit.\n"
            f"[Unit]\nDescription=Patroni: PostgreSQL {cfg.postgres.version} (pg-platform)\n"
            f"After=network-online.target {ETCD_UNIT}\nWants=network-online.target\n"
            f"RequiresMountsFor={ud.DATA_MOUNT}\n\n"
            "[Service]\nType=simple\nUser=postgres\nGroup=postgres\n"
            f"ExecStart=/usr/bin/patroni {ha_layout(cfg).patroni_yml}\n"
            "ExecReload=/bin/kill -HUP $MAINPID\nKillMode=process\nTimeoutStopSec=600\n"
            "Restart=on-failure\nRestartSec=5\nOOMScoreAdjust=-900\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def haproxy_file(cfg: PlatformConfig, addresses: tuple[str, ...]) -> str:
    """A host's HAProxy (the same file on every host): read-write on haproxy_port,
    read-only on the next, both on loopback only, in front of every node (the renderer
    the local stack uses)."""
    targets = ProxyTargets(ud.PROXY_HOST, cfg.ha.haproxy_port, "/run/haproxy/admin.sock")
    return haproxy_cfg(ha_hosts.nodes(cfg, addresses, ha_layout(cfg)), targets, ud.TLS)


def bundle_files(cfg: PlatformConfig, replica: int, addresses: tuple[str, ...],
                 sec: HaSecrets | None) -> list[BundleFile]:
    """Host `replica`'s patroni.yml (0600, postgres), Patroni's unit and, on the first
    three, etcd.conf and etcd's unit; HAProxy's config (every host runs a PgBouncer).

    `addresses`: every database host's private address, primary first. A changed
    patroni.yml is a Patroni reload (SIGHUP: node-local settings); its dynamic part goes
    through the REST API (infra/hostagent/patroni_step.py)."""
    if sec is None:
        return []
    lay = ha_layout(cfg)
    files = [BundleFile(path, text, "root", "0644", (f"restart:{ETCD_UNIT}",))
             for path, text in ha_hosts.plain_files(cfg, replica, addresses, lay).items()]
    if files:
        files.append(BundleFile(f"{UNIT_DIR}/{ETCD_UNIT}", etcd_unit(cfg), "root", "0644",
                                ("daemon-reload", f"restart:{ETCD_UNIT}")))
    files += [BundleFile(path, text, "postgres", "0600", (f"reload:{PATRONI_UNIT}",))
              for path, text in ha_hosts.secret_files(cfg, replica, addresses, lay,
                                                      sec).items()]
    files.append(BundleFile(f"{UNIT_DIR}/{PATRONI_UNIT}", patroni_unit(cfg), "root", "0644",
                            ("daemon-reload", f"restart:{PATRONI_UNIT}")))
    files.append(BundleFile(HAPROXY_CFG, haproxy_file(cfg, addresses), "root", "0644",
                            (f"reload:{HAPROXY_UNIT}",)))
    return files


def applier_spec(cfg: PlatformConfig, replica: int, addresses: tuple[str, ...]) -> dict[str, Any]:
    """The bundle's `patroni` section: what pgp-apply runs instead of the postgresql unit."""
    lay = ha_layout(cfg)
    etcd = bool(ha_hosts.plain_files(cfg, replica, addresses, lay))
    return {"unit": PATRONI_UNIT, "etcd_unit": ETCD_UNIT if etcd else "",
            "config": lay.patroni_yml, "ca_file": ud.TLS.ca_file,
            "members": [f"https://{a}:{cfg.ha.restapi_port}" for a in addresses]}


def enable(cfg: PlatformConfig, replica: int, addresses: tuple[str, ...]) -> list[str]:
    """The units pgp-apply enables first, in order: etcd before Patroni, then HAProxy
    (before PgBouncer, which every host runs)."""
    spec = applier_spec(cfg, replica, addresses)
    return [u for u in (spec["etcd_unit"], PATRONI_UNIT, HAPROXY_UNIT) if u]


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
