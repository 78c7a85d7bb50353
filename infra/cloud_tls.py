"""TLS for dev and prod hosts: one CA per stack and one certificate per host.

The local stack shares one server certificate between its processes, which all
run on one machine (infra/tls.py). On dev and prod every host gets its own key,
so that no host's bundle holds another host's secret; all are signed by the
stack's CA, whose certificate is the `ca_cert` output. Both are dynamic
resources whose keys stay Pulumi secrets in state; the CA is made once, and a
host's certificate is re-issued in place when the names it must carry change
(a replica added or removed changes the read-only pool's host list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from infra import tls
from infra.hostctl import files
from infra.resource_types import keep_urn

PROVIDER_VERSION = "1"


class StackCaProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        ca = tls.make_ca(f"pg-platform {props['stack']} CA")
        return CreateResult(id_=f"ca-{props['stack']}",
                            outs={**props, "ca_cert": ca.cert_pem, "ca_key": ca.key_pem})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("stack", "rotation") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(replaces), replaces=replaces,
                          delete_before_replace=False)


class StackCa(Resource, module="tls", name="StackCa"):
    """The stack's certificate authority; `ca_key` is a secret output."""

    ca_cert: pulumi.Output[str]
    ca_key: pulumi.Output[str]

    def __init__(self, name: str, stack: str, rotation: int = 0,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(StackCaProvider(), name,
                         {"stack": stack, "rotation": rotation, "ca_cert": None,
                          "ca_key": None, "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["ca_key"]))


class HostCertificateProvider(ResourceProvider):
    def _issue(self, props: dict[str, Any]) -> dict[str, Any]:
        ca = tls.KeyPair(cert_pem=props["ca_cert"], key_pem=props["ca_key"])
        cert = tls.make_server_cert(ca, props["common_name"], props["hosts"])
        return {**props, "cert": cert.cert_pem, "key": cert.key_pem}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"cert-{props['common_name']}", outs=self._issue(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("common_name", "hosts", "ca_cert", "provider_version")
                   if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._issue(news))


class HostCertificate(Resource, module="tls", name="HostCertificate"):
    """A server certificate and key for one host, naming `hosts` (addresses or names)."""

    cert: pulumi.Output[str]
    key: pulumi.Output[str]

    def __init__(self, name: str, ca: StackCa, hosts: pulumi.Input[list[str]],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        checked = pulumi.Output.from_input(hosts).apply(_checked)
        super().__init__(HostCertificateProvider(), name,
                         {"common_name": name, "hosts": checked, "ca_cert": ca.ca_cert,
                          "ca_key": pulumi.Output.secret(ca.ca_key), "cert": None, "key": None,
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["ca_key", "key"]))


def _checked(hosts: list[str]) -> list[str]:
    for host in hosts:
        tls.san(host)  # a bad name fails before anything is made
    return list(dict.fromkeys(hosts))


class CaFileProvider(ResourceProvider):
    """Writes the CA certificate where libpq on this machine reads it (sslrootcert)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        files.make_dir(Path(props["path"]).parent, 0o755)
        files.write_file(Path(props["path"]), props["ca_cert"], 0o644)
        return CreateResult(id_=props["path"], outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self.create(news)
        return UpdateResult(outs=news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        files.remove(props["path"])


class CaFile(Resource, module="tls", name="CaFile"):
    """The stack's CA certificate (public) on the machine running Pulumi."""

    def __init__(self, name: str, path: str, ca: StackCa,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(CaFileProvider(), name,
                         {"path": path, "ca_cert": ca.ca_cert,
                          "provider_version": PROVIDER_VERSION}, keep_urn(opts))
