"""The prod stack's backup bucket, instance role and Secrets Manager secrets.

Least privilege is the point of this module: the bucket is private, versioned,
encrypted and TLS-only; the instance role may touch only the pgBackRest
repository path in it (the policy pgBackRest documents) and read only the
host's own secret bundle (one role per host), never the per-role password
secrets, which exist for operators and applications.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.config import PlatformConfig

_S3_OBJECT_ACTIONS = ["s3:PutObject", "s3:PutObjectTagging", "s3:GetObject",
                      "s3:GetObjectVersion", "s3:DeleteObject"]


def with_bucket(cfg: PlatformConfig, name: str) -> PlatformConfig:
    """The settings with the bucket's actual name, for rendering pgbackrest.conf."""
    assert cfg.backup.s3 is not None
    s3 = dataclasses.replace(cfg.backup.s3, bucket=name)
    return dataclasses.replace(cfg, backup=dataclasses.replace(cfg.backup, s3=s3))


def repo_prefix(cfg: PlatformConfig) -> str:
    """pgBackRest's repo1-path without its leading slash: the key prefix in the bucket."""
    assert cfg.backup.s3 is not None
    return cfg.backup.s3.path.strip("/")


def bucket(cfg: PlatformConfig, tags: dict[str, str],
           opts: pulumi.ResourceOptions) -> aws.s3.BucketV2:
    """The pgBackRest repository bucket and the settings that make it safe."""
    assert cfg.aws is not None and cfg.backup.s3 is not None
    kms = cfg.aws.kms_key_arn
    # No name in config: Pulumi names it, and the hosts' pgbackrest.conf gets that name.
    name = cfg.backup.s3.bucket or None
    b = aws.s3.BucketV2("backup-bucket", bucket=name,
                        bucket_prefix=None if name else f"pg-platform-{cfg.stack}-backups-",
                        force_destroy=False, tags=tags, opts=opts)
    child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=b))
    aws.s3.BucketPublicAccessBlock(
        "backup-bucket-public-access", bucket=b.id, block_public_acls=True,
        block_public_policy=True, ignore_public_acls=True, restrict_public_buckets=True,
        opts=child)
    aws.s3.BucketOwnershipControls(
        "backup-bucket-ownership", bucket=b.id,
        rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
        opts=child)
    aws.s3.BucketVersioningV2(
        "backup-bucket-versioning", bucket=b.id,
        versioning_configuration=aws.s3.BucketVersioningV2VersioningConfigurationArgs(
            status="Enabled"), opts=child)
    aws.s3.BucketServerSideEncryptionConfigurationV2(
        "backup-bucket-encryption", bucket=b.id,
        rules=[aws.s3.BucketServerSideEncryptionConfigurationV2RuleArgs(
            apply_server_side_encryption_by_default=aws.s3.
            BucketServerSideEncryptionConfigurationV2RuleApplyServerSideEncryptionByDefaultArgs(
                sse_algorithm="aws:kms" if kms else "AES256", kms_master_key_id=kms or None),
            bucket_key_enabled=bool(kms))], opts=child)
    aws.s3.BucketLifecycleConfigurationV2(
        "backup-bucket-lifecycle", bucket=b.id,
        rules=[aws.s3.BucketLifecycleConfigurationV2RuleArgs(
            id="expire-old-versions", status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationV2RuleFilterArgs(prefix=""),
            noncurrent_version_expiration=aws.s3.
            BucketLifecycleConfigurationV2RuleNoncurrentVersionExpirationArgs(
                noncurrent_days=cfg.aws.noncurrent_version_days),
            abort_incomplete_multipart_upload=aws.s3.
            BucketLifecycleConfigurationV2RuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=7))], opts=child)
    aws.s3.BucketPolicy("backup-bucket-tls-only", bucket=b.id, policy=b.arn.apply(
        lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [{
            "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
            "Action": "s3:*", "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})), opts=child)
    return b


def instance_policy(bucket_arn: str, prefix: str, secret_arn: str, status_key: str,
                    kms_key_arn: str, *, repository: bool) -> str:
    """One host's only permissions: its own bundle, its own status object and, on the
    primary (`repository`), the pgBackRest path as pgBackRest documents it for S3."""
    statements: list[dict[str, Any]] = [
        {"Sid": "OwnBundle", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": secret_arn},
        {"Sid": "OwnStatus", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": f"{bucket_arn}/{status_key}"},
    ]
    if repository:
        statements += [
            {"Sid": "ListRepoRoot", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": bucket_arn,
             "Condition": {"StringEquals": {"s3:prefix": ["", prefix], "s3:delimiter": ["/"]}}},
            {"Sid": "ListRepo", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": bucket_arn, "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}},
            {"Sid": "RepoObjects", "Effect": "Allow", "Action": _S3_OBJECT_ACTIONS,
             "Resource": f"{bucket_arn}/{prefix}/*"},
        ]
    if kms_key_arn:
        statements.append({"Sid": "UseKey", "Effect": "Allow",
                           "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                           "Resource": kms_key_arn})
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def instance_profile(cfg: PlatformConfig, host: str, b: aws.s3.BucketV2,
                     host_secret: aws.secretsmanager.Secret, status_key: str,
                     tags: dict[str, str], opts: pulumi.ResourceOptions,
                     *, repository: bool) -> aws.iam.InstanceProfile:
    """One role and profile per host: a replica cannot read the primary's bundle."""
    assert cfg.aws is not None
    role = aws.iam.Role(f"{host}-role", assume_role_policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}), tags=tags, opts=opts)
    child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=role))
    prefix, kms = repo_prefix(cfg), cfg.aws.kms_key_arn
    aws.iam.RolePolicy(f"{host}-policy", role=role.id, policy=pulumi.Output.all(
        b.arn, host_secret.arn).apply(
            lambda arns: instance_policy(arns[0], prefix, arns[1], status_key, kms,
                                         repository=repository)), opts=child)
    if cfg.aws.ssm_managed:
        # Session Manager where the AMI has an agent; SSH keys otherwise (aws.ssh_public_keys).
        aws.iam.RolePolicyAttachment(
            f"{host}-ssm", role=role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", opts=child)
    return aws.iam.InstanceProfile(f"{host}-profile", role=role.name, tags=tags, opts=child)


def secret(name: str, cfg: PlatformConfig, value: pulumi.Output[str], description: str,
           tags: dict[str, str], opts: pulumi.ResourceOptions) -> aws.secretsmanager.Secret:
    """One Secrets Manager secret whose value is a Pulumi secret in state too."""
    assert cfg.aws is not None
    s = aws.secretsmanager.Secret(
        name, name_prefix=f"pg-platform/{cfg.stack}/{name}-", description=description,
        kms_key_id=cfg.aws.kms_key_arn or None,
        recovery_window_in_days=cfg.aws.secret_recovery_days, tags=tags, opts=opts)
    aws.secretsmanager.SecretVersion(
        f"{name}-value", secret_id=s.id, secret_string=_as_secret(value),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=s)))
    return s


def _as_secret(value: pulumi.Output[str]) -> pulumi.Output[str]:
    secret_value: pulumi.Output[str] = pulumi.Output.secret(value)
    return secret_value


def role_secret(role: str, cfg: PlatformConfig, password: pulumi.Output[str],
                tags: dict[str, str], opts: pulumi.ResourceOptions) -> aws.secretsmanager.Secret:
    """A role's password in the shape RDS-style tooling reads: username and password."""
    value = password.apply(lambda p: json.dumps({"username": role, "password": p}))
    return secret(f"{role}-password", cfg, value, f"PostgreSQL role {role} (pg-platform)",
                  tags, opts)
