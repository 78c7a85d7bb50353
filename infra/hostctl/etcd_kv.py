"""A few etcd v3 key-value calls over its JSON gateway (`/v3/kv/...`), with mutual TLS.

This is the API Patroni's etcd3 client speaks (infra/hostctl/etcd.py explains the
gateway); the fence (infra/hostctl/fence.py) reads Patroni's keys and deletes the
leader key through a transaction that compares what it read. Reads are etcd's
default linearizable ranges, so a member cut off from the quorum errors instead of
answering with stale data. Any failure to get an answer is `EtcdUnavailable`: the
caller must then treat everything as unknown.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.hostctl.etcd import tls_context
from infra.render.postgres import TlsFiles

TIMEOUT = 2.0


class EtcdUnavailable(Exception):
    """No endpoint gave an answer (or a transaction's outcome is not known)."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    lease: int


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class EtcdKV:
    endpoints: Sequence[str]  # https://host:port
    tls: TlsFiles

    def _post(self, url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=tls_context(self.tls),
                                    timeout=TIMEOUT) as resp:
            doc = json.loads(resp.read())
        if not isinstance(doc, dict) or "header" not in doc:
            raise ValueError(f"not an etcd answer: {str(doc)[:200]}")
        return doc

    def _first(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer of the first endpoint that gives one (reads only: safe to repeat)."""
        errors = []
        for url in self.endpoints:
            try:
                return self._post(url, path, body)
            except (OSError, ValueError, urllib.error.URLError) as exc:
                errors.append(f"{url}: {exc}")
        raise EtcdUnavailable("; ".join(errors) or "no etcd endpoint")

    def get(self, key: str) -> KeyValue | None:
        """The key's value and revisions, None when it does not exist."""
        doc = self._first("/v3/kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return KeyValue(key=key, value=base64.b64decode(kv.get("value", "")),
                        mod_revision=int(kv.get("mod_revision", 0)),
                        lease=int(kv.get("lease", 0)))

    def put(self, key: str, value: str) -> None:
        """Set a key (no lease); the tests use it to stage keys."""
        self._first("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def delete_if_unchanged(self, key: str, value: bytes, mod_revision: int,
                            also_unchanged: Sequence[tuple[str, int]] = ()) -> bool:
        """Delete `key` only if it still holds `value` at `mod_revision` and every key in
        `also_unchanged` still has its mod_revision (0: the key does not exist). True when
        etcd deleted it, False when a compare failed (someone changed a key meanwhile).

        Sent to one endpoint at a time and never repeated elsewhere after a failure
        without an answer: the first may have applied it, and a retry would then report
        a refusal for a delete that happened. Such a failure raises EtcdUnavailable.
        """
        compare: list[dict[str, Any]] = [
            {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)},
            {"key": _b64(key), "target": "MOD", "result": "EQUAL",
             "mod_revision": str(mod_revision)}]
        compare += [{"key": _b64(k), "target": "MOD", "result": "EQUAL",
                     "mod_revision": str(rev)} for k, rev in also_unchanged]
        body = {"compare": compare, "success": [{"request_delete_range": {"key": _b64(key)}}],
                "failure": []}
        errors = []
        for url in self.endpoints:
            try:
                doc = self._post(url, "/v3/kv/txn", body)
            except urllib.error.HTTPError as exc:  # answered, and refused: nothing applied
                errors.append(f"{url}: {exc}")
                continue
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, ConnectionRefusedError):  # nothing was sent
                    errors.append(f"{url}: {exc}")
                    continue
                raise EtcdUnavailable(f"{url}: transaction outcome unknown: {exc}") from None
            except (OSError, ValueError) as exc:
                raise EtcdUnavailable(f"{url}: transaction outcome unknown: {exc}") from None
            return bool(doc.get("succeeded", False))  # proto3 JSON leaves out a false
        raise EtcdUnavailable("; ".join(errors) or "no etcd endpoint")
