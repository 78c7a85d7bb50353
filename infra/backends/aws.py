"""The aws backend (stack prod): EC2 hosts in an existing VPC, backups in S3.

A security group that admits the database and pooler ports only from the
configured CIDRs and security groups (and replication between its own
members); a primary and its replicas, each with IMDSv2 required, an encrypted
root volume and a separate encrypted gp3 data volume; cloud-init user-data
that installs and configures everything from the shared renderings; the backup
bucket, the instance role and the secrets (see aws_storage).

Secrets never travel in user-data: each host's secret files sit in a Secrets
Manager bundle that cloud-init fetches at boot with the instance role
(see aws_userdata). The user-data itself is therefore plain, and stays
reviewable in `pulumi preview`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pulumi
import pulumi_aws as aws

from infra.backends.aws_storage import (
    bucket,
    instance_profile,
    role_secret,
    secret,
    with_bucket,
)
from infra.backends.aws_userdata import (
    DEVICE_NAME,
    Host,
    fits,
    gzip_base64,
    ha_bundle_files,
    secret_bundle,
    testinfra_hosts,
    user_data,
)
from infra.backends.base import Endpoints, LocalFiles
from infra.backends.cloud_files import PasswordOutputs, dsn, ha_secrets
from infra.config import AwsSettings, PlatformConfig
from infra.passwords import Password
from infra.render.patroni import HaSecrets
from infra.render.roles import Passwords


def _tags(cfg: PlatformConfig, name: str) -> dict[str, str]:
    return {"Name": f"pg-platform-{cfg.stack}-{name}", "pg-platform:stack": cfg.stack,
            "managed-by": "pulumi"}


def security_group(cfg: PlatformConfig, settings: AwsSettings,
                   opts: pulumi.ResourceOptions) -> aws.ec2.SecurityGroup:
    """Ingress on 5432/6432 from allowed sources only; egress for packages, S3, secrets."""
    sg = aws.ec2.SecurityGroup(
        "db-sg", vpc_id=settings.vpc_id, tags=_tags(cfg, "db"),
        description=f"pg-platform {cfg.stack}: PostgreSQL and PgBouncer", opts=opts)
    child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=sg))
    ports = {"pg": cfg.postgres.port, "pooler": cfg.pooler.port}
    for label, port in ports.items():
        for i, cidr in enumerate(settings.allowed_cidrs):
            v6 = ":" in cidr
            aws.vpc.SecurityGroupIngressRule(
                f"{label}-from-cidr-{i}", security_group_id=sg.id, ip_protocol="tcp",
                from_port=port, to_port=port, cidr_ipv6=cidr if v6 else None,
                cidr_ipv4=None if v6 else cidr, description=f"{label} from {cidr}", opts=child)
        for group in settings.allowed_security_groups:
            aws.vpc.SecurityGroupIngressRule(
                f"{label}-from-{group}", security_group_id=sg.id, ip_protocol="tcp",
                from_port=port, to_port=port, referenced_security_group_id=group,
                description=f"{label} from {group}", opts=child)
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
    return sg


def ha_addresses(cfg: PlatformConfig, primary: str, replicas: Sequence[str]) -> tuple[str, ...]:
    """ha.manager patroni: every database host's address, primary first; else ()."""
    return (primary, *replicas) if cfg.ha.manager == "patroni" else ()


def ha_security_rules(cfg: PlatformConfig, sg: aws.ec2.SecurityGroup,
                      child: pulumi.ResourceOptions) -> None:
    """The members reach each other's etcd (client and peer) and Patroni REST ports."""
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


def _passwords(cfg: PlatformConfig, child: pulumi.ResourceOptions) -> PasswordOutputs:
    pg = cfg.postgres
    names = (pg.owner_role, pg.app_role, pg.replication_role, cfg.pooler.admin_user)
    return PasswordOutputs(*[Password(f"{n}-password", opts=child).value for n in names])


def _plain_user_data(text: str) -> str | None:
    return text if fits(text) else None


def _packed_user_data(text: str) -> str | None:
    """Over EC2's 16 KiB limit the same document goes gzip-compressed, which cloud-init reads."""
    return None if fits(text) else gzip_base64(text)


class _Hosts:
    """One host at a time: network interface, secret bundle, data volume, instance.

    Each host's interface is made first, so every private address is known before
    any instance exists: replicas name the primary, and the primary's PgBouncer
    names the replicas, without a cycle. The address also survives a replacement.
    """

    def __init__(self, cfg: PlatformConfig, settings: AwsSettings, parent: pulumi.Resource,
                 sg: aws.ec2.SecurityGroup, every: pulumi.Output[Passwords],
                 bucket_name: pulumi.Output[str]) -> None:
        self.cfg, self.settings, self.sg, self.every = cfg, settings, sg, every
        self.bucket_name = bucket_name
        self.opts = pulumi.ResourceOptions(parent=parent)

    def subnet(self, replica: int) -> str:
        return self.settings.subnet_ids[replica % len(self.settings.subnet_ids)]

    def interface(self, name: str, replica: int) -> aws.ec2.NetworkInterface:
        return aws.ec2.NetworkInterface(
            f"{name}-eni", subnet_id=self.subnet(replica), security_groups=[self.sg.id],
            description=f"pg-platform {self.cfg.stack} {name}", tags=_tags(self.cfg, name),
            opts=self.opts)

    def bundle(self, name: str, replica: int, ips: list[pulumi.Output[str]],
               ha: pulumi.Output[HaSecrets] | None) -> aws.secretsmanager.Secret:
        cfg = self.cfg
        value = pulumi.Output.all(self.every, ha, *ips).apply(
            lambda a: secret_bundle(cfg, a[0], replica, a[2], ha_bundle_files(
                cfg, Host(replica, "", "", addresses=ha_addresses(cfg, a[2], a[3:])), a[1])))
        return secret(f"{name}-files", cfg, value, f"pg-platform {name} host secret files",
                      _tags(cfg, name), self.opts)

    def instance(self, name: str, replica: int, eni: aws.ec2.NetworkInterface,
                 secret_id: pulumi.Output[str], primary_ip: pulumi.Output[str],
                 replica_ips: list[pulumi.Output[str]],
                 profile: aws.iam.InstanceProfile) -> aws.ec2.Instance:
        cfg, s = self.cfg, self.settings
        az = aws.ec2.get_subnet_output(id=self.subnet(replica)).availability_zone
        volume = aws.ebs.Volume(
            f"{name}-data", availability_zone=az, size=s.data_volume_gb, type="gp3",
            iops=s.data_volume_iops, throughput=s.data_volume_throughput, encrypted=True,
            kms_key_id=s.kms_key_arn or None, tags=_tags(cfg, f"{name}-data"),
            opts=self.opts)
        text = pulumi.Output.all(self.bucket_name, volume.id, secret_id, primary_ip,
                                 *replica_ips).apply(
            lambda a: user_data(with_bucket(cfg, a[0]),
                                Host(replica=replica, volume_id=a[1], secret_id=a[2],
                                     primary_host=a[3] if replica else "",
                                     addresses=ha_addresses(cfg, a[3], a[4:])), tuple(a[4:])))
        # An Output of None leaves the argument unset; the other one carries the text.
        plain = cast("pulumi.Output[str]", text.apply(_plain_user_data))
        packed = cast("pulumi.Output[str]", text.apply(_packed_user_data))
        inst = aws.ec2.Instance(
            name, ami=s.ami, instance_type=s.instance_type, iam_instance_profile=profile.name,
            network_interfaces=[aws.ec2.InstanceNetworkInterfaceArgs(
                network_interface_id=eni.id, device_index=0)],
            user_data=plain, user_data_base64=packed,
            # Data lives on its own volume and the address on its own interface, so a
            # new host takes both over: changed files reach a host by replacement, as
            # cloud-init runs once per instance.
            user_data_replace_on_change=True,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_tokens="required", http_endpoint="enabled", http_put_response_hop_limit=1),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_size=s.root_volume_gb, volume_type="gp3", encrypted=True,
                kms_key_id=s.kms_key_arn or None, delete_on_termination=True),
            monitoring=True, tags=_tags(cfg, name),
            opts=pulumi.ResourceOptions.merge(self.opts, pulumi.ResourceOptions(
                delete_before_replace=True)))
        aws.ec2.VolumeAttachment(
            f"{name}-data-attachment", device_name=DEVICE_NAME, volume_id=volume.id,
            instance_id=inst.id, stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions.merge(self.opts, pulumi.ResourceOptions(
                delete_before_replace=True)))
        return inst


def build(cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
    """Bucket, role, secrets, security group and hosts; returns how to reach them."""
    settings = cfg.aws
    if settings is None:
        raise ValueError("the aws backend needs pg-platform:aws settings")
    pg = cfg.postgres
    child = pulumi.ResourceOptions(parent=parent)
    pws = _passwords(cfg, child)
    for role, value in ((pg.owner_role, pws.owner), (pg.app_role, pws.app),
                        (pg.replication_role, pws.replicator),
                        (cfg.pooler.admin_user, pws.pooler_admin)):
        role_secret(role, cfg, value, _tags(cfg, role), child)
    sg = security_group(cfg, settings, child)
    backups = bucket(cfg, _tags(cfg, "backups"), child)
    hosts = _Hosts(cfg, settings, parent, sg, pws.all(), backups.bucket)
    names = ["primary", *[f"replica-{i}" for i in range(1, cfg.replicas + 1)]]
    enis = [hosts.interface(n, i) for i, n in enumerate(names)]
    ips = [e.private_ip for e in enis]
    ha = ha_secrets(cfg, child, pws.replicator)
    if ha is not None:
        ha_security_rules(cfg, sg, child)
    bundles = [hosts.bundle(n, i, ips, ha) for i, n in enumerate(names)]
    profile = instance_profile(cfg, backups, bundles, _tags(cfg, "instance"), child)
    instances = [hosts.instance(n, i, enis[i], bundles[i].arn, ips[0], ips[1:], profile)
                 for i, n in enumerate(names)]
    primary_ip = ips[0]
    return Endpoints(
        primary_dsn=dsn(pg.owner_role, pws.owner, primary_ip, pg.port, pg.database),
        app_dsn=dsn(pg.app_role, pws.app, primary_ip, pg.port, pg.database),
        replica_dsns=pulumi.Output.secret(pulumi.Output.all(*[
            dsn(pg.app_role, pws.app, ip, pg.port, pg.database) for ip in ips[1:]])),
        pooler_dsn=dsn(pg.app_role, pws.app, primary_ip, cfg.pooler.port, pg.database),
        pooler_admin_dsn=dsn(cfg.pooler.admin_user, pws.pooler_admin, primary_ip,
                             cfg.pooler.port, "pgbouncer"),
        # The hosts do not use TLS yet (issue #17 issues their certificates).
        ca_cert=pulumi.Output.from_input(""),
        primary_id=instances[0].id,
        testinfra_hosts=pulumi.Output.all(backups.bucket, *ips).apply(
            lambda a: testinfra_hosts(with_bucket(cfg, a[0]), list(a[1:]))),
        ready=[instances[0]],
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


BACKEND = AwsBackend()
