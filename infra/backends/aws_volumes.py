"""The prod hosts' data volumes: protected, retained on delete, never replaced by surprise.

EBS volumes cannot change their availability zone or KMS key in place; the AWS
provider replaces them, and a replaced data volume is a new, empty cluster.
`VolumeGuard` carries exactly the inputs that would force that, and its diff
refuses a change of them in `pulumi preview` (infra/data_loss.py, the same
guard the local backend uses), unless `pg-platform:allow_data_loss` is true.
The volume itself is `protect`ed (only while data loss is not allowed) and
`retain_on_delete`, so even an allowed replace or a `destroy` leaves the old
volume in the account.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from infra.config import PlatformConfig
from infra.data_loss import refuse_data_loss
from infra.resource_types import keep_urn

# Inputs of aws.ebs.Volume that force a replacement, with the setting behind each.
REPLACING = {"availability_zone": "pg-platform:aws.subnet_ids (the host's availability zone)",
             "kms_key_id": "pg-platform:aws.kms_key_arn"}


class VolumeGuardProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"guard-{props['volume']}", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in REPLACING if olds.get(k) != news.get(k)]
        refuse_data_loss(replaces, olds, news, what=f"the data volume {news.get('volume')} "
                         "(a new, empty cluster)", keys=REPLACING)
        changed = [k for k in news if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)


class VolumeGuard(Resource, module="aws", name="VolumeGuard"):
    def __init__(self, name: str, *, volume: str, availability_zone: pulumi.Input[str],
                 kms_key_id: str, allow_data_loss: bool,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(VolumeGuardProvider(), name,
                         {"volume": volume, "availability_zone": availability_zone,
                          "kms_key_id": kms_key_id, "allow_data_loss": allow_data_loss},
                         keep_urn(opts))


def volume_options(cfg: PlatformConfig, parent: pulumi.Resource,
                   guard: pulumi.Resource) -> pulumi.ResourceOptions:
    """Protected unless data loss is allowed; always retained when deleted or replaced."""
    return pulumi.ResourceOptions(parent=parent, depends_on=[guard],
                                  protect=not cfg.allow_data_loss, retain_on_delete=True)
