"""The IMDSv2 emulator behaves as EC2 does with http_tokens=required: no token, no data."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from tests.hosts import imds


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), imds.make_handler(
        {"instance-id": "i-0abc", "placement/availability-zone": "eu-west-1a"}, "role-x"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _get(url: str, token: str = "") -> tuple[int, str]:
    req = urllib.request.Request(url, headers={imds.TOKEN_HEADER: token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _token(base: str, ttl: str = "60") -> tuple[int, str]:
    req = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                 headers={imds.TTL_HEADER: ttl})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_no_token_no_metadata(base: str) -> None:
    assert _get(f"{base}/latest/meta-data/instance-id")[0] == 401
    assert _get(f"{base}/latest/meta-data/instance-id", "forged")[0] == 401


def test_a_token_needs_a_valid_ttl(base: str) -> None:
    assert _token(base, "")[0] == 400
    assert _token(base, "0")[0] == 400
    assert _token(base, "21601")[0] == 400


def test_with_a_token_the_instance_and_its_role_credentials(base: str) -> None:
    code, token = _token(base)
    assert code == 200 and token
    assert _get(f"{base}/latest/meta-data/instance-id", token) == (200, "i-0abc")
    assert _get(f"{base}/latest/meta-data/iam/security-credentials/", token) == (200, "role-x")
    code, body = _get(f"{base}/latest/meta-data/iam/security-credentials/role-x", token)
    creds = json.loads(body)
    assert code == 200 and creds["Code"] == "Success"
    assert {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"} <= set(creds)
    assert _get(f"{base}/latest/meta-data/iam/security-credentials/other", token)[0] == 404
