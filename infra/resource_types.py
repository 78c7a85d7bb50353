"""Typed dynamic resources that keep the URNs of stacks made before they had types.

`class Primary(Resource, module="local", name="Primary")` gives the type
`pulumi-python:dynamic/local:Primary`, so `pulumi up` and `pulumi stack
--show-urns` say what each resource is. Stacks made earlier hold every one of
them as `pulumi-python:dynamic:Resource`; the alias tells the engine those are
the same resources, so nothing is replaced.

Provider classes stay at their module paths: the state holds them pickled by
reference (module and class name), so moving one would break every stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi

# The type every dynamic resource had before it was given its own.
UNTYPED = "pulumi-python:dynamic:Resource"


def keep_urn(opts: pulumi.ResourceOptions | None, *,
             secret: Sequence[str] = ()) -> pulumi.ResourceOptions:
    """`opts` plus the alias from the untyped resource of the same name and parent, and
    `secret`: outputs the engine must keep encrypted (passwords, keys, verifiers)."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
        aliases=[pulumi.Alias(type_=UNTYPED)], additional_secret_outputs=list(secret)))
