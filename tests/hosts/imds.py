"""An IMDSv2 emulator for one host-tier host (stdlib only; run inside the host's network
namespace on 169.254.169.254:80).

It answers what the bootstrap and pgBackRest ask of EC2's instance metadata service,
the way EC2 does with `http_tokens = required`: a PUT /latest/api/token with a TTL
header returns a token; every GET without a valid token is 401. Served paths:
instance-id, local-ipv4, placement/availability-zone, placement/region,
iam/info, iam/security-credentials/ (the role name) and .../<role> (keys and an
expiry an hour ahead). The keys are the fixed test keys moto accepts.

    python tests/hosts/imds.py --instance-id i-... --ip 10.x.y.z --role NAME
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"


def make_handler(meta: dict[str, str], role: str) -> type[BaseHTTPRequestHandler]:
    tokens: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        server_version = "EC2ws"

        def log_message(self, fmt: str, *args: object) -> None:
            print(f"imds: {self.command} {self.path} -> {fmt % args}", flush=True)

        def reply(self, code: int, body: str, kind: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if self.path != "/latest/api/token":
                self.reply(404, "not found")
                return
            try:
                ttl = int(self.headers.get(TTL_HEADER, ""))
            except ValueError:
                self.reply(400, "missing or bad " + TTL_HEADER)
                return
            if not 1 <= ttl <= 21600:
                self.reply(400, "ttl out of range")
                return
            token = secrets.token_urlsafe(32)
            tokens[token] = time.monotonic() + ttl
            self.reply(200, token)

        def do_GET(self) -> None:
            token = self.headers.get(TOKEN_HEADER, "")
            if tokens.get(token, 0.0) < time.monotonic():
                self.reply(401, "")
                return
            path = self.path.split("?")[0].rstrip("/")
            prefix = "/latest/meta-data/"
            creds = prefix + "iam/security-credentials"
            if path == creds:
                self.reply(200, role)
            elif path == f"{creds}/{role}":
                now = datetime.now(UTC)
                self.reply(200, json.dumps({
                    "Code": "Success", "Type": "AWS-HMAC",
                    "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "AccessKeyId": "ASIAHOSTTIERTESTKEY1",
                    "SecretAccessKey": "host-tier-test-secret-access-key",
                    "Token": "host-tier-session-token",
                    "Expiration": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}),
                    "application/json")
            elif path == prefix + "iam/info":
                self.reply(200, json.dumps({
                    "Code": "Success", "InstanceProfileArn":
                    f"arn:aws:iam::123456789012:instance-profile/{role}",
                    "InstanceProfileId": "AIPAHOSTTIER"}), "application/json")
            elif path.startswith(prefix) and path[len(prefix):] in meta:
                self.reply(200, meta[path[len(prefix):]])
            else:
                self.reply(404, "not found")

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instance-id", required=True)
    ap.add_argument("--ip", required=True)
    ap.add_argument("--region", default="eu-west-1")
    ap.add_argument("--role", required=True)
    ap.add_argument("--listen", default="169.254.169.254")
    args = ap.parse_args()
    meta = {"instance-id": args.instance_id, "local-ipv4": args.ip,
            "placement/availability-zone": args.region + "a", "placement/region": args.region}
    ThreadingHTTPServer((args.listen, 80), make_handler(meta, args.role)).serve_forever()


if __name__ == "__main__":
    main()
