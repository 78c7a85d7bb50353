"""TLS for the platform: a certificate authority and server certificates.

Made with the `cryptography` package, never by shelling out to openssl, so the
same code runs wherever the program runs. Keys are ECDSA P-256: quick to
generate, and accepted by PostgreSQL, PgBouncer and libpq alike.

A dynamic provider (`TlsCertificates`) makes the CA once, at create, and keeps
every private key as a Pulumi secret in the stack's state, the way generated
passwords are kept (infra/passwords.py). A change in the hosts a certificate
must name re-issues the server certificate from the same CA, so clients that
trust the CA keep working.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from infra.errors import ConfigError
from infra.hostctl import files
from infra.resource_types import keep_urn

PROVIDER_VERSION = "1"
CA_DAYS = 3650
# Browsers cap server certificates at 398 days; database clients do not, and a
# platform's certificates should not expire between two routine `pulumi up`s.
SERVER_DAYS = 825
# Clocks of the hosts and of the machine running `pulumi up` may differ a little.
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: str
    key_pem: str

    def __repr__(self) -> str:  # never show a key in a traceback or a log
        return f"KeyPair(subject={subject(self.cert_pem)!r}, key=<secret>)"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pg-platform"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def san(host: str) -> x509.GeneralName:
    """An IP address SAN for an address, a DNS SAN for a name (libpq checks both kinds)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if "," in host:
        # PgBouncer 1.18 checks a server certificate against the literal host list of
        # a database entry ("127.0.0.2,127.0.0.3"), so the replicas' certificate names
        # that list too; each part must itself be an address or a name.
        for part in host.split(","):
            san(part)
        return x509.DNSName(host.lower())
    label = host.rstrip(".")
    if not label or len(label) > 253 or not all(
            part and len(part) <= 63 and part.replace("-", "").isalnum() and part.isascii()
            for part in label.split(".")):
        raise ConfigError(f"TLS host {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(label.lower())


def make_ca(common_name: str, *, days: int = CA_DAYS) -> KeyPair:
    """A self-signed CA that may sign server certificates and nothing below them."""
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert_pem=_pem_cert(cert), key_pem=_pem_key(key))


def make_server_cert(ca: KeyPair, common_name: str, hosts: Sequence[str], *,
                     days: int = SERVER_DAYS) -> KeyPair:
    """A server certificate signed by `ca`, naming every host clients dial (SANs).

    libpq's verify-full matches the host it connected to against the SANs, so
    every address a client uses (each replica's too) must be listed.
    """
    if not hosts:
        raise ConfigError("a server certificate needs at least one host name or address")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key is not an EC key made by infra.tls")
    key = _key()
    now = dt.datetime.now(dt.UTC)
    names = list(dict.fromkeys(san(h) for h in hosts))
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return KeyPair(cert_pem=_pem_cert(cert), key_pem=_pem_key(key))


def subject(cert_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.subject.rfc4514_string()


def sans(cert_pem: str) -> list[str]:
    """The hosts a certificate names, as text (for checks and for people)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in ext]


def signed_by(cert_pem: str, ca_pem: str) -> bool:
    """True when `ca_pem` issued `cert_pem` and the signature verifies."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class TlsProvider(ResourceProvider):
    """Makes the CA and server certificate at create; re-issues the server one on new hosts."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        ca = make_ca(f"{props['name']} CA")
        server = make_server_cert(ca, props["name"], props["hosts"])
        outs = {**props, "ca_cert": ca.cert_pem, "ca_key": ca.key_pem,
                "server_cert": server.cert_pem, "server_key": server.key_pem}
        return CreateResult(id_=f"tls-{props['name']}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("name", "rotation") if olds.get(k) != news.get(k)]
        changed = replaces or [k for k in ("hosts", "provider_version")
                               if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=replaces,
                          delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        ca = KeyPair(cert_pem=olds["ca_cert"], key_pem=olds["ca_key"])
        server = make_server_cert(ca, news["name"], news["hosts"])
        return UpdateResult(outs={**news, "ca_cert": ca.cert_pem, "ca_key": ca.key_pem,
                                  "server_cert": server.cert_pem,
                                  "server_key": server.key_pem})


class TlsCertificates(Resource, module="tls", name="Certificates"):
    """A CA and one server certificate for `hosts`; both keys are secret outputs."""

    ca_cert: pulumi.Output[str]
    server_cert: pulumi.Output[str]
    server_key: pulumi.Output[str]

    def __init__(self, name: str, hosts: Sequence[str], rotation: int = 0,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        for host in hosts:
            san(host)  # a bad name fails here, before anything is made
        super().__init__(TlsProvider(), name,
                         {"name": name, "hosts": list(hosts), "rotation": rotation,
                          "ca_cert": None, "ca_key": None, "server_cert": None,
                          "server_key": None, "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["ca_key", "server_key"]))


class TlsFilesProvider(ResourceProvider):
    """Writes the CA, the server certificate and its key (0600) where a host's servers read them.

    The files belong to the service user, as PostgreSQL refuses a key anyone else can read.
    """

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._write(props)
        return CreateResult(id_=props["key_file"], outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._write(news)
        return UpdateResult(outs=news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        files.remove(props["cert_file"], props["key_file"], props["ca_file"])

    @staticmethod
    def _write(props: dict[str, Any]) -> None:
        files.write_tls(ca_file=props["ca_file"], ca_cert=props["ca_cert"],
                        cert_file=props["cert_file"], server_cert=props["server_cert"],
                        key_file=props["key_file"], server_key=props["server_key"])


class TlsFiles(Resource, module="tls", name="Files"):
    """The TLS files of one host; the key passes through state as a secret."""

    def __init__(self, name: str, *, cert_file: str, key_file: str, ca_file: str,
                 certs: TlsCertificates, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TlsFilesProvider(), name,
                         {"cert_file": cert_file, "key_file": key_file, "ca_file": ca_file,
                          "ca_cert": certs.ca_cert, "server_cert": certs.server_cert,
                          "server_key": pulumi.Output.secret(certs.server_key),
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["server_key"]))
