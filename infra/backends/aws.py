"""The aws backend (stack prod): EC2 hosts in an existing VPC, backups in S3.

A security group that admits the database and pooler ports only from the
configured CIDRs and security groups (SSH and the exporters from their own
CIDRs only); a primary and its replicas, each with IMDSv2 required, its own
instance role, an encrypted root volume and a separate, protected, encrypted
gp3 data volume; the backup bucket and the secrets (see aws_storage).

Hosts converge in place (docs/day2.md): user-data is the same on every day-2
change (aws_userdata), and everything that changes reaches a running host as
its versioned config bundle in its own Secrets Manager secret (aws_bundle),
which the host pulls and applies. `pulumi up` then waits until every host
reports the new version (converge.HostsConverged), or fails naming the host.
TLS everywhere: one CA per stack, one certificate per host (infra/cloud_tls).
"""

from __future__ import annotations

from typing import cast

import pulumi
import pulumi_aws as aws

from infra import roles
from infra.backends import aws_bundle as bundle
from infra.backends import aws_dsns, aws_ha, rendered_checks
from infra.backends.aws_storage import (
    bucket,
    instance_profile,
    role_secret,
    secret,
    with_bucket,
)
from infra.backends.aws_userdata import (
    DEVICE_NAME,
    PROXY_HOST,
    Host,
    fits,
    gzip_base64,
    host_files,
    testinfra_hosts,
    user_data,
)
from infra.backends.aws_volumes import VolumeGuard, volume_options
from infra.backends.base import Endpoints, LocalFiles
from infra.backends.converge import HostsConverged, status_key
from infra.backends.host_bundle import version_of
from infra.backends.local_layout import state_dir
from infra.cloud_tls import CaFile, HostCertificate, StackCa
from infra.config import AwsSettings, PlatformConfig, exporter_ports
from infra.config.aws import check_pins
from infra.hostctl.pgbackrest import PgBackRest
from infra.passwords import Password


def _tags(cfg: PlatformConfig, name: str) -> dict[str, str]:
    return {"Name": f"pg-platform-{cfg.stack}-{name}", "pg-platform:stack": cfg.stack,
            "managed-by": "pulumi"}


def _ingress(sg: aws.ec2.SecurityGroup, label: str, port: int, cidrs: tuple[str, ...],
             child: pulumi.ResourceOptions) -> None:
    for i, cidr in enumerate(cidrs):
        v6 = ":" in cidr
        aws.vpc.SecurityGroupIngressRule(
            f"{label}-from-cidr-{i}", security_group_id=sg.id, ip_protocol="tcp",
            from_port=port, to_port=port, cidr_ipv6=cidr if v6 else None,
            cidr_ipv4=None if v6 else cidr, description=f"{label} from {cidr}", opts=child)


def security_group(cfg: PlatformConfig, settings: AwsSettings,
                   opts: pulumi.ResourceOptions) -> aws.ec2.SecurityGroup:
    """Ingress on 5432/6432 from allowed sources only, SSH from `ssh_cidrs`, the exporters
    from `prometheus_cidrs`; egress for packages, S3 and secrets."""
    sg = aws.ec2.SecurityGroup(
        "db-sg", vpc_id=settings.vpc_id, tags=_tags(cfg, "db"),
        description=f"pg-platform {cfg.stack}: PostgreSQL and PgBouncer", opts=opts)
    child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=sg))
    # Every host's interface is in this group, so the pooler rule admits clients to each
    # host's PgBouncer (with Patroni every host runs one; `pooler_dsn` lists them all).
    ports = {"pg": cfg.postgres.port, "pooler": cfg.pooler.port}
    for label, port in ports.items():
        _ingress(sg, label, port, settings.allowed_cidrs, child)
        for group in settings.allowed_security_groups:
            aws.vpc.SecurityGroupIngressRule(
                f"{label}-from-{group}", security_group_id=sg.id, ip_protocol="tcp",
                from_port=port, to_port=port, referenced_security_group_id=group,
                description=f"{label} from {group}", opts=child)
    _ingress(sg, "ssh", 22, settings.ssh_cidrs, child)
    for label, port in zip(("pg-exporter", "pgbouncer-exporter"), exporter_ports(cfg),
                           strict=True):
        _ingress(sg, label, port, settings.prometheus_cidrs, child)
    # Members reach each other: replication, and PgBouncer's read-only pool on replicas.
    aws.vpc.SecurityGroupIngressRule(
        "pg-from-members", security_group_id=sg.id, ip_protocol="tcp",
        from_port=cfg.postgres.port, to_port=cfg.postgres.port,
        referenced_security_group_id=sg.id, description="replication and pooler", opts=child)
    aws.vpc.SecurityGroupEgressRule(
        "pg-to-members", security_group_id=sg.id, ip_protocol="tcp",
        from_port=cfg.postgres.port, to_port=cfg.postgres.port,
        referenced_security_group_id=sg.id, description="replication", opts=child)
    for port in (80, 443):
        # apt mirrors, PGDG, Timescale, S3 and Secrets Manager endpoints.
        aws.vpc.SecurityGroupEgressRule(
            f"egress-{port}", security_group_id=sg.id, ip_protocol="tcp", from_port=port,
            to_port=port, cidr_ipv4="0.0.0.0/0", description="packages and AWS APIs",
            opts=child)
    aws_ha.security_rules(cfg, sg, child)  # etcd and Patroni REST, with ha.manager patroni
    return sg


def passwords(cfg: PlatformConfig,
              child: pulumi.ResourceOptions) -> dict[str, pulumi.Output[str]]:
    """Every generated password by role; `pg-platform:rotation` bumps give new ones."""
    pg = cfg.postgres
    names = {"owner": pg.owner_role, "app": pg.app_role, "replicator": pg.replication_role,
             "pooler_admin": cfg.pooler.admin_user, "monitor": roles.MONITOR,
             "tenant_admin": roles.TENANT_ADMIN}
    return {key: Password(f"{role}-password", rotation=cfg.rotation, opts=child).value
            for key, role in names.items()}


def _plain_user_data(text: str) -> str | None:
    return text if fits(text) else None


def _packed_user_data(text: str) -> str | None:
    """Over EC2's 16 KiB limit the same document goes gzip-compressed, which cloud-init reads."""
    return None if fits(text) else gzip_base64(text)


def cert_hosts(ips: list[str], replica: int, ha: bool = False) -> list[str]:
    """The names a host's certificate carries: its address and, on a replica, the read-only
    pool's whole host list, which PgBouncer 1.18 checks literally under verify-full. With
    Patroni, each host's PgBouncer dials every node through HAProxy on that host's
    loopback, so every node's certificate names 127.0.0.1 instead (only a process on the
    same host can be reached there); clients of the multi-host `pooler_dsn` dial each
    host at its own address, which its certificate names first."""
    if ha:
        return [ips[replica], PROXY_HOST]
    if replica and len(ips) > 2:
        return [ips[replica], ",".join(ips[1:])]
    return [ips[replica]]


class _Hosts:
    """One host at a time: interface, certificate, bundle, role, data volume, instance.

    Each host's interface is made first, so every private address is known before
    any instance exists: replicas name the primary, and the primary's PgBouncer
    names the replicas, without a cycle. The address also survives a replacement.
    """

    def __init__(self, cfg: PlatformConfig, settings: AwsSettings, parent: pulumi.Resource,
                 sg: aws.ec2.SecurityGroup, every: pulumi.Output[bundle.CloudPasswords],
                 backups: aws.s3.BucketV2, ca: StackCa,
                 ha: dict[str, pulumi.Output[str]]) -> None:
        self.cfg, self.settings, self.sg, self.every = cfg, settings, sg, every
        self.ha = ha  # Patroni's passwords (aws_ha.passwords), empty without HA
        self.backups, self.ca, self.parent = backups, ca, parent
        self.opts = pulumi.ResourceOptions(parent=parent)
        self.versions: dict[str, pulumi.Output[str]] = {}   # host -> its bundle's version
        self.primary_ip: pulumi.Output[str] = pulumi.Output.from_input("")

    def subnet(self, replica: int) -> str:
        return self.settings.subnet_ids[replica % len(self.settings.subnet_ids)]

    def interface(self, name: str, replica: int) -> aws.ec2.NetworkInterface:
        return aws.ec2.NetworkInterface(
            f"{name}-eni", subnet_id=self.subnet(replica), security_groups=[self.sg.id],
            description=f"pg-platform {self.cfg.stack} {name}", tags=_tags(self.cfg, name),
            opts=self.opts)

    def bundle(self, host: Host, ips: pulumi.Output[list[str]]) -> aws.secretsmanager.Secret:
        """The host's bundle in its own secret; the certificate is the host's own."""
        cfg, name = self.cfg, host.name
        cert = HostCertificate(f"{name}-tls", self.ca,
                               ips.apply(lambda a: cert_hosts(a, host.replica,
                                                              aws_ha.enabled(cfg))),
                               opts=self.opts)
        ha_keys = list(self.ha)
        value = pulumi.Output.all(self.every, ips, self.backups.bucket, self.ca.ca_cert,
                                  cert.cert, cert.key, *self.ha.values()).apply(
            lambda a: bundle.host_bundle(
                with_bucket(cfg, a[2]), host,
                bundle.HostAddresses(own=a[1][host.replica], primary=a[1][0],
                                     replicas=tuple(a[1][1:])),
                a[0], bundle.HostTls(ca_cert=a[3], cert=a[4], key=a[5]), a[2],
                aws_ha.secrets(dict(zip(ha_keys, a[6:], strict=True)), a[0].replicator)))
        self.versions[name] = value.apply(version_of)
        return secret(f"{name}-files", cfg, value, f"pg-platform {name} host config bundle",
                      _tags(cfg, name), self.opts)

    def instance(self, host: Host, eni: aws.ec2.NetworkInterface,
                 secret_id: pulumi.Output[str],
                 profile: aws.iam.InstanceProfile) -> list[pulumi.Resource]:
        cfg, s, name = self.cfg, self.settings, host.name
        az = aws.ec2.get_subnet_output(id=self.subnet(host.replica)).availability_zone
        guard = VolumeGuard(f"{name}-data-guard", volume=f"{name}-data",
                            availability_zone=az, kms_key_id=s.kms_key_arn,
                            allow_data_loss=cfg.allow_data_loss, opts=self.opts)
        volume = aws.ebs.Volume(
            f"{name}-data", availability_zone=az, size=s.data_volume_gb, type="gp3",
            iops=s.data_volume_iops, throughput=s.data_volume_throughput, encrypted=True,
            kms_key_id=s.kms_key_arn or None, tags=_tags(cfg, f"{name}-data"),
            opts=volume_options(cfg, self.parent, guard))
        text = pulumi.Output.all(volume.id, secret_id, self.primary_ip).apply(
            lambda a: user_data(cfg, Host(replica=host.replica, volume_id=a[0],
                                          secret_id=a[1],
                                          primary_host=a[2] if host.replica else "")))
        # An Output of None leaves the argument unset; the other one carries the text.
        plain = cast("pulumi.Output[str]", text.apply(_plain_user_data))
        packed = cast("pulumi.Output[str]", text.apply(_packed_user_data))
        inst = aws.ec2.Instance(
            name, ami=s.ami, instance_type=s.instance_type, iam_instance_profile=profile.name,
            network_interfaces=[aws.ec2.InstanceNetworkInterfaceArgs(
                network_interface_id=eni.id, device_index=0)],
            user_data=plain, user_data_base64=packed,
            # User-data never changes on day 2 (it names the host, not its config): the
            # bundle carries changes to the running host, which is never replaced for them.
            user_data_replace_on_change=False,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_tokens="required", http_endpoint="enabled", http_put_response_hop_limit=1),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_size=s.root_volume_gb, volume_type="gp3", encrypted=True,
                kms_key_id=s.kms_key_arn or None, delete_on_termination=True),
            monitoring=True, tags=_tags(cfg, name),
            opts=pulumi.ResourceOptions.merge(self.opts, pulumi.ResourceOptions(
                delete_before_replace=True)))
        attachment = aws.ec2.VolumeAttachment(
            f"{name}-data-attachment", device_name=DEVICE_NAME, volume_id=volume.id,
            instance_id=inst.id, stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions.merge(self.opts, pulumi.ResourceOptions(
                delete_before_replace=True)))
        return [inst, attachment]


def build(cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
    """Bucket, secrets, security group, CA and hosts; waits for the hosts to converge."""
    settings = cfg.aws
    if settings is None:
        raise ValueError("the aws backend needs pg-platform:aws settings")
    # Before any resource: user-data would raise it inside an Output, with a traceback.
    check_pins(settings, cfg.postgres.version, ha=cfg.ha.manager == "patroni")
    pg = cfg.postgres
    check_bucket = cfg.backup.s3.bucket if cfg.backup.s3 and cfg.backup.s3.bucket else \
        "pgp-bucket-made-by-up"  # the name the bucket gets is known only after it is made
    replica_ips = tuple(f"10.0.0.{2 + r}" for r in range(cfg.replicas))
    for i in range(cfg.replicas + 1):
        host = Host(replica=i, volume_id="", secret_id="", primary_host="10.0.0.1" if i else "")
        rendered_checks.check_files(cfg, f"host-{i}", host_files(
            with_bucket(cfg, check_bucket), host, replica_ips,
            replica_ips[i - 1] if i else "10.0.0.1"))
    aws_ha.check(cfg)
    child = pulumi.ResourceOptions(parent=parent)
    pws = passwords(cfg, child)
    pg_names = {"owner": pg.owner_role, "app": pg.app_role, "replicator": pg.replication_role,
                "pooler_admin": cfg.pooler.admin_user, "monitor": roles.MONITOR,
                "tenant_admin": roles.TENANT_ADMIN}
    for key, role in pg_names.items():
        role_secret(role, cfg, pws[key], _tags(cfg, role), child)
    sg = security_group(cfg, settings, child)
    backups = bucket(cfg, _tags(cfg, "backups"), child)
    ca = StackCa("tls-ca", cfg.stack, opts=child)
    ca_file = str(state_dir(cfg) / "ca.crt")
    ca_local = CaFile("tls-ca-file", ca_file, ca, opts=child)
    hosts = _Hosts(cfg, settings, parent, sg, bundle.cloud_passwords(pws), backups, ca,
                   aws_ha.passwords(cfg, child))
    names = [Host(replica=i, volume_id="", secret_id="") for i in range(cfg.replicas + 1)]
    enis = [hosts.interface(h.name, h.replica) for h in names]
    ips = [e.private_ip for e in enis]
    hosts.primary_ip = ips[0]
    all_ips = pulumi.Output.all(*ips).apply(list)
    made: list[pulumi.Resource] = [ca_local]
    for h in names:
        host_secret = hosts.bundle(h, all_ips)
        profile = instance_profile(cfg, h.name, backups, host_secret,
                                   status_key(cfg.stack, h.name), _tags(cfg, h.name), child,
                                   # with Patroni any host may lead and archive
                                   repository=not h.replica or aws_ha.enabled(cfg))
        made += [host_secret, *hosts.instance(h, enis[h.replica], host_secret.arn, profile)]
    server = aws_dsns.ServerDsns(cfg, ips, ca_file)
    owner_dsn = server.primary(pg.owner_role, pws["owner"])
    versions = pulumi.Output.all(*hosts.versions.values()).apply(
        lambda v: dict(zip(hosts.versions, v, strict=True)))
    converged = HostsConverged("hosts-converged", stack=cfg.stack, bucket=backups.bucket,
                               region=settings.region, versions=versions, dsn=owner_dsn,
                               opts=pulumi.ResourceOptions(parent=parent, depends_on=made))
    instances = [r for r in made if isinstance(r, aws.ec2.Instance)]
    poolers = aws_dsns.pooler_hosts(cfg, ips)
    return Endpoints(
        primary_dsn=owner_dsn,
        app_dsn=server.primary(pg.app_role, pws["app"]),
        replica_dsns=server.replicas(pg.app_role, pws["app"]),
        pooler_dsn=aws_dsns.pooler_dsn(cfg, poolers, pg.app_role, pws["app"], pg.database, ca_file),
        pooler_admin_dsn=aws_dsns.pooler_dsn(cfg, poolers, cfg.pooler.admin_user,
                                     pws["pooler_admin"], "pgbouncer", ca_file),
        ca_cert=ca.ca_cert,
        primary_id=instances[0].id,
        testinfra_hosts=pulumi.Output.all(backups.bucket, *ips).apply(
            lambda a: testinfra_hosts(with_bucket(cfg, a[0]), list(a[1:]))),
        ready=[converged],
        monitor_dsn=server.primary(roles.MONITOR, pws["monitor"]),
    )


class AwsBackend:
    """EC2 hosts in an existing VPC; PostgreSQL from the PGDG apt repository."""

    name = "aws"

    def versions(self, cfg: PlatformConfig) -> tuple[int, ...]:
        """The versions both PGDG and Timescale's apt repository package for Debian 12."""
        return (15, 16, 17)

    def build(self, cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
        return build(cfg, parent)

    def local_files(self, cfg: PlatformConfig) -> LocalFiles | None:
        return None  # pgBackRest runs on the primary's host

    def remote_pgbackrest(self, cfg: PlatformConfig) -> PgBackRest | None:
        return None  # the hosts are reached over SSH only; run health there


BACKEND = AwsBackend()
