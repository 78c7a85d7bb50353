"""SCRAM-SHA-256 verifiers, as PostgreSQL stores them (RFC 5802, RFC 7677).

Roles get their passwords as verifiers, so a plaintext password never reaches
the server's statement log, and PgBouncer's userlist can hold the very same
verifier. The salt is derived from the password and the role name: the same
inputs give the same verifier, so rendered files change only when a password
does, and PgBouncer can pass SCRAM through (it needs the server's salt).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

ITERATIONS = 4096


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def verifier(role: str, password: str, iterations: int = ITERATIONS) -> str:
    """`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` for a role's password."""
    salt = hmac.new(password.encode(), f"pg-platform salt:{role}".encode(),
                    hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"
