"""infra.tls: certificates proven by real TLS handshakes, not by reading their fields back.

Python's ssl module (OpenSSL underneath, as in libpq) plays server and client
on a loopback socket; `check_hostname` is what libpq's sslmode=verify-full does.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from infra import tls
from infra.errors import ConfigError


@pytest.fixture(scope="module")
def ca() -> tls.KeyPair:
    return tls.make_ca("test CA")


@pytest.fixture(scope="module")
def server(ca: tls.KeyPair) -> tls.KeyPair:
    return tls.make_server_cert(ca, "db", ["127.0.0.1", "localhost", "127.0.0.2"])


def handshake(tmp_path: Path, pair: tls.KeyPair, ca_pem: str, server_hostname: str) -> str:
    """Serve `pair` on loopback and connect as a verifying client; returns the TLS version."""
    (tmp_path / "s.crt").write_text(pair.cert_pem)
    (tmp_path / "s.key").write_text(pair.key_pem)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    cctx = ssl.create_default_context(cadata=ca_pem)  # CERT_REQUIRED + check_hostname
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with sctx.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                cctx.wrap_socket(raw, server_hostname=server_hostname) as conn:
            version = conn.version() or ""
            conn.sendall(b"x")
            return version
    finally:
        thread.join(5)
        listener.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2"])
def test_a_verifying_client_accepts_every_named_host(tmp_path: Path, ca: tls.KeyPair,
                                                     server: tls.KeyPair, host: str) -> None:
    assert handshake(tmp_path, server, ca.cert_pem, host).startswith("TLSv1.")


def test_a_host_the_certificate_does_not_name_is_refused(tmp_path: Path, ca: tls.KeyPair,
                                                         server: tls.KeyPair) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(tmp_path, server, ca.cert_pem, "127.0.0.9")


def test_another_ca_is_not_trusted(tmp_path: Path, server: tls.KeyPair) -> None:
    other = tls.make_ca("someone else")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(tmp_path, server, other.cert_pem, "127.0.0.1")


def test_sans_signatures_and_the_ca_cannot_be_used_as_a_server(ca: tls.KeyPair,
                                                               server: tls.KeyPair) -> None:
    assert tls.sans(server.cert_pem) == ["127.0.0.1", "localhost", "127.0.0.2"]
    assert tls.signed_by(server.cert_pem, ca.cert_pem)
    assert not tls.signed_by(server.cert_pem, tls.make_ca("other").cert_pem)
    assert tls.signed_by(ca.cert_pem, ca.cert_pem)  # self-signed
    assert "BEGIN PRIVATE KEY" in server.key_pem and "BEGIN CERTIFICATE" in server.cert_pem


def test_repr_never_shows_a_key(server: tls.KeyPair) -> None:
    body = server.key_pem.splitlines()[1]
    assert body not in repr(server) and "<secret>" in repr(server)


@pytest.mark.parametrize("bad", ["", "bad host", "x" * 64 + ".example", "-", "é.example"])
def test_a_bad_host_name_is_refused_with_the_name(bad: str, ca: tls.KeyPair) -> None:
    with pytest.raises(ConfigError) as err:
        tls.make_server_cert(ca, "db", ["127.0.0.1", bad])
    assert repr(bad) in str(err.value)


def test_provider_keeps_the_ca_when_hosts_change_and_replaces_on_rotation() -> None:
    provider = tls.TlsProvider()
    props = {"name": "platform", "hosts": ["127.0.0.1"], "rotation": 0,
             "provider_version": tls.PROVIDER_VERSION}
    outs = dict(provider.create(props).outs or {})
    assert tls.sans(outs["server_cert"]) == ["127.0.0.1"]
    assert not provider.diff("", outs, {**props}).changes

    more = {**props, "hosts": ["127.0.0.1", "127.0.0.2"]}
    d = provider.diff("", outs, more)
    assert d.changes and not d.replaces
    updated = dict(provider.update("", outs, more).outs or {})
    assert updated["ca_cert"] == outs["ca_cert"] and updated["ca_key"] == outs["ca_key"]
    assert updated["server_cert"] != outs["server_cert"]
    assert tls.sans(updated["server_cert"]) == ["127.0.0.1", "127.0.0.2"]
    assert tls.signed_by(updated["server_cert"], outs["ca_cert"])

    assert provider.diff("", outs, {**props, "rotation": 1}).replaces == ["rotation"]
