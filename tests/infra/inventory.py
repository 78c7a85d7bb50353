"""Which hosts a stack has, how testinfra reaches them, and what files they must hold.

The stack's outputs say where the hosts are. Every backend exports
the inventory as the output `testinfra_hosts`; the local backend runs every
host on this machine, so its inventory is derived here, by the function that
renders that output, from the stack's settings and the same renderers `pulumi
up` uses: the expected file texts are the templates' renderings, not copies of
what is on disk. A list of hosts:

    {"name": "primary",
     "role": "primary" | "replica" | "pooler"
             | "node"                       # a Patroni member: Patroni decides its role
             | "etcd" | "proxy",            # Patroni's DCS members and HAProxy
     "spec": "docker://pg-primary" | "ssh://admin@10.0.1.5",
     "service_user": "postgres",
     "data_dir": "...",                     # postgres hosts
     "address": "127.0.0.2:5432",           # local: where that host's own server listens
     "pgbackrest_config": "...",            # the host that runs backups
     "pooler_ini": "...", "auth_file": "...",   # pooler hosts
     "files": {"<path on the host>": "<sha256 hex of the rendered text>"}}
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from infra import config, render
from infra.ops.env import pulumi_env
from infra.ops.stack import StackRef


@dataclass(frozen=True)
class Host:
    name: str
    role: str
    spec: str
    service_user: str
    data_dir: str = ""
    pgbackrest_config: str = ""
    pooler_ini: str = ""
    auth_file: str = ""
    address: str = ""  # "host:port" of a PostgreSQL host's own server, where exported
    # path on the host -> sha256 of the text it must hold
    files: dict[str, str] = field(default_factory=dict)


class SecretDict(dict[str, Any]):
    """Stack outputs or passwords: a failing test's report shows the keys, never the values."""

    def __repr__(self) -> str:
        return f"<secret values for {sorted(self)}>"


def sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


@dataclass(frozen=True)
class StackAccess:
    """How to ask the engine about one stack of one project."""

    stack: str
    project_dir: Path
    env: dict[str, str] | None = None  # e.g. a throw-away stack's backend and passphrase

    def pulumi(self, *args: str) -> str:
        # env.sh's settings unless the environment (or `env`) sets them.
        env = pulumi_env(overrides=self.env)
        proc = subprocess.run(["pulumi", *args, "--stack", self.stack, "--non-interactive"],
                              cwd=self.project_dir, env=env, capture_output=True, text=True,
                              timeout=180, check=False)
        if proc.returncode != 0:  # stderr holds no secrets; stdout might
            raise RuntimeError(f"pulumi {args[0]} {args[1] if len(args) > 1 else ''} for stack "
                               f"{self.stack!r} exited {proc.returncode}: {proc.stderr[-800:]}")
        return proc.stdout

    def config(self) -> config.PlatformConfig:
        return StackRef(self.stack, self.project_dir, self.env).config()

    def outputs(self) -> dict[str, Any]:
        return SecretDict(StackRef(self.stack, self.project_dir, self.env).outputs())

    def generated_passwords(self) -> dict[str, str]:
        """Every Password resource's value, by resource name, from the decrypted state."""
        state = json.loads(self.pulumi("stack", "export", "--show-secrets"))
        found: dict[str, str] = SecretDict()
        for res in state.get("deployment", {}).get("resources", []) or []:
            name = str(res.get("urn", "")).rsplit("::", 1)[-1]
            value = _plain((res.get("outputs") or {}).get("value"))
            if name.endswith(("-password", "-key")) and isinstance(value, str):
                found[name] = value
        return found


@dataclass(frozen=True)
class StackSnapshot:
    """A stack's settings, outputs and generated passwords from one JSON file (0600),
    for hosts whose stack has no Pulumi state here: the host tier renders the prod
    program under mocks (tests/hosts) and writes {"stack", "config", "outputs",
    "passwords"}. The suite reads the same `testinfra_hosts` output from it."""

    path: Path

    def _data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.path.read_text())
        return loaded

    @property
    def stack(self) -> str:
        return str(self._data()["stack"])

    def config(self) -> config.PlatformConfig:
        return config.load(self._data()["config"], self.stack)

    def outputs(self) -> dict[str, Any]:
        return SecretDict(self._data()["outputs"])

    def generated_passwords(self) -> dict[str, str]:
        return SecretDict(self._data()["passwords"])


def _plain(value: Any) -> Any:
    """A decrypted secret in an exported state is {<sig>: ..., "plaintext": "<json>"}."""
    if isinstance(value, dict) and "plaintext" in value:
        return json.loads(value["plaintext"])
    return value


def local_inventory(cfg: config.PlatformConfig, passwords: dict[str, str]) -> list[Host]:
    """Every host of a local stack, as the backend's `testinfra_hosts` renders them for
    the stack's settings, plus the auth file (secret, so the output leaves it out)."""
    from infra.backends import local, local_patroni, tenant_users
    from infra.backends.local_layout import layout

    rendered = (local_patroni.testinfra_hosts if cfg.ha.manager == "patroni"
                else local.testinfra_hosts)(cfg, layout(cfg).tls)
    app_pw = passwords[f"{cfg.postgres.app_role}-password"]
    admin_pw = passwords[f"{cfg.pooler.admin_user}-password"]
    userlist = (tenant_users.auth_file(cfg, app_pw, admin_pw, passwords["tenant_admin-password"],
                                       passwords["pgbouncer_auth-password"])
                if "pgbouncer_auth-password" in passwords
                else render.userlist_txt(render.pooler_users(cfg, app_pw, admin_pw)))
    return [replace(h, files={**h.files, h.auth_file: sha256(userlist)}) if h.role == "pooler"
            else h for h in hosts_of(rendered)]


def hosts_of(raw: list[dict[str, Any]]) -> list[Host]:
    keys = set(Host.__dataclass_fields__)
    return [Host(**{k: v for k, v in item.items() if k in keys}) for item in raw]


def exported_inventory(outputs: dict[str, Any]) -> list[Host]:
    """The `testinfra_hosts` output of a dev or prod stack."""
    raw = outputs.get("testinfra_hosts")
    if not isinstance(raw, list) or not raw:
        raise RuntimeError("this stack exports no `testinfra_hosts` output; the dev and prod "
                           "programs must export their hosts (see docs/testing.md)")
    return hosts_of(raw)
