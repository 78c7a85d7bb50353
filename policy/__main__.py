"""The pg-platform guardrails pack: `pulumi preview --policy-pack policy`.

Only this module builds the PolicyPack (which starts a gRPC server), so tests
import policy.validators and never this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validators import RULES  # type: ignore[import-not-found]

PolicyPack(
    name="pg-platform-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        StackValidationPolicy(name=r.name, description=r.description, validate=r.validate)
        if r.stack else
        ResourceValidationPolicy(name=r.name, description=r.description, validate=r.validate)
        for r in RULES
    ],
)
