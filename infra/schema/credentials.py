"""Tenant role credentials, derived from one secret key.

Every tenant role ``tenant_<slug>`` gets the password
``HMAC-SHA256(key, "pg-platform tenant:<slug>")`` (URL-safe base64, 256 bits).
One Pulumi secret (the key) thus stands for any number of tenants: the state
does not grow with them, the PgBouncer userlist and the server hold the same
deterministic SCRAM verifier, and ``tenant-dsn SLUG`` can print one DSN
without a map of 10,000 secrets. Knowing one tenant's password reveals
nothing about another's (HMAC is a PRF); rotating the key rotates them all.

Because each password carries 256 bits of entropy, the verifier's PBKDF2
iteration count protects nothing a brute force could reach: it only slows the
stretching that stands in for a weak password. So tenant verifiers use
:data:`TENANT_ITERATIONS`, not PostgreSQL's 4096: at 4096, PBKDF2 cost 3 ms of
CPU per tenant in the engine (30 s at 10,000 tenants, most of bench P3b's
growth) and again in every tenant client's login. Guessing a 256-bit password
is as hopeless at 32 iterations as at 4096.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat

import psycopg

from infra import scram
from infra.dsn import conninfo
from infra.errors import ConfigError
from infra.schema.tenants import schema_for

MIN_KEY_CHARS = 32
TENANT_ITERATIONS = 32


def role_for(slug: str) -> str:
    """A tenant's login role has its schema's name (validated slug)."""
    return schema_for(slug)


def _check_key(key: str) -> str:
    if not isinstance(key, str) or len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"tenant password key: expected a secret of at least "
                          f"{MIN_KEY_CHARS} characters")
    return key


def password(key: str, slug: str) -> str:
    digest = hmac.new(_check_key(key).encode(), f"pg-platform tenant:{slug}".encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def verifier(key: str, slug: str) -> str:
    """The SCRAM verifier the server and PgBouncer's userlist both hold."""
    return scram.verifier(role_for(slug), password(key, slug), TENANT_ITERATIONS)


def dsn(base_dsn: str, key: str, slug: str, dbname: str | None = None) -> str:
    """`base_dsn` (any role's DSN for the platform, conninfo or URI) with the tenant's role
    and password; host, port, database and TLS settings are kept."""
    extra = {"dbname": dbname} if dbname else {}
    try:
        return conninfo(base_dsn, user=role_for(slug), password=password(key, slug), **extra)
    except psycopg.ProgrammingError:
        raise ConfigError("tenant DSN: the base DSN is not a libpq connection string") from None


def read_key_file(path: str) -> str:
    """The key from a file only its owner may read (mode 0600 or stricter).

    :raises ConfigError: naming the file when it is missing, too open or too short.
    """
    try:
        st = os.stat(path)
        text = open(path, encoding="utf-8").read().strip()  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"tenant key file {path}: {exc.strerror}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"tenant key file {path}: mode {stat.S_IMODE(st.st_mode):04o}; "
                          "allowed: 0600 or stricter")
    return _check_key(text)
