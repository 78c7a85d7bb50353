"""`pg-platform:docker`: the dev stack's containers on the local Docker engine.

Validated on every stack, so a typo in a stack file never hides; the settings
are returned only when the stack uses the docker backend.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from infra.config.section import Section, cidr
from infra.errors import ConfigError

# The public record of timescale/timescaledb-ha:pg15-latest's RepoDigest (docs/day2.md:
# not verified from a machine with no registry access).
DEFAULT_IMAGE = ("timescale/timescaledb-ha:pg15-latest@sha256:"
                 "a8e3322e1cf936828698cb4de2a9c4b59acae1b123909f023bb15f42270af95d")
# With `ha.manager: patroni` (infra/backends/docker_patroni.py): etcd 3.5 and HAProxy 2.6.
# Public records, not verified from a machine with no registry access (docs/dev-and-prod.md):
# etcd's from a published Helm chart's values, HAProxy's from docker-library/repo-info
# (repos/haproxy/remote/2.6.34.md, the multi-platform index).
DEFAULT_ETCD_IMAGE = ("quay.io/coreos/etcd:v3.5.16@sha256:"
                      "d967d98a12dc220a1a290794711dba7eba04b8ce465e12b02383d1bfbb33e159")
DEFAULT_HAPROXY_IMAGE = ("haproxy:2.6.34@sha256:"
                         "82c023b4f99e2090b14dbe7f04b0590b4e0af608f7c29cedcabf25c34fb066cd")
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
_ALLOWED_IMAGE = f"an image reference pinned by digest, such as {DEFAULT_IMAGE!r}"
# Pinned: `name[:tag]@sha256:<64 hex>` (docker buildx imagetools inspect NAME:TAG shows it).
DIGEST = re.compile(r"^[^@]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class DockerSettings:
    """The dev stack: containers on the local Docker engine."""

    image: str = DEFAULT_IMAGE
    pooler_image: str = ""          # empty: the database image, which ships pgbouncer
    etcd_image: str = DEFAULT_ETCD_IMAGE        # ha.manager patroni only
    haproxy_image: str = DEFAULT_HAPROXY_IMAGE  # ha.manager patroni only
    network_subnet: str = "172.28.16.0/24"
    keep_image: bool = True


def parse_docker(sec: Section, backend: str) -> DockerSettings | None:
    """`pg-platform:docker`; checked even on other stacks so typos never hide."""
    d = DockerSettings()
    image = sec.pattern("image", d.image, IMAGE, _ALLOWED_IMAGE, required=True)
    pooler = sec.pattern("pooler_image", d.pooler_image, IMAGE, _ALLOWED_IMAGE)
    etcd = sec.pattern("etcd_image", d.etcd_image, IMAGE, _ALLOWED_IMAGE, required=True)
    haproxy = sec.pattern("haproxy_image", d.haproxy_image, IMAGE, _ALLOWED_IMAGE,
                          required=True)
    for name, value in (("image", image), ("pooler_image", pooler), ("etcd_image", etcd),
                        ("haproxy_image", haproxy)):
        # A bare tag would let a rebuilt container (an image pull, a new machine) run another
        # image than the one the stack was tested with.
        if value and not DIGEST.match(value):
            raise ConfigError(f"{sec.where(name)}={value!r}: not pinned by digest; allowed is "
                              "NAME[:TAG]@sha256:<64 lowercase hex digits> (docker buildx "
                              f"imagetools inspect NAME:TAG shows it), e.g. {DEFAULT_IMAGE!r}")
    subnet = cidr(sec.where("network_subnet"), sec.get("network_subnet", d.network_subnet))
    if ipaddress.ip_network(subnet).num_addresses < 8:
        raise ConfigError(f"{sec.where('network_subnet')}={subnet!r}: too small; allowed are "
                          "networks with room for the primary, 5 replicas and the pooler (/29 "
                          "or larger)")
    settings = DockerSettings(image=image, pooler_image=pooler, etcd_image=etcd,
                              haproxy_image=haproxy, network_subnet=subnet,
                              keep_image=sec.flag("keep_image", d.keep_image, strings=True))
    sec.finish()
    return settings if backend == "docker" else None
