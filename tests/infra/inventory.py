"""Which hosts a stack has, how testinfra reaches them, and what files they must hold.

The stack's outputs say where the hosts are. The local backend runs every
host on this machine, so its inventory is derived here, from the stack's
settings and the same renderers `pulumi up` uses: the expected file texts are
the templates' renderings, not copies of what is on disk.

Other backends (dev: Docker, prod: AWS) export the inventory as the output
`testinfra_hosts`, a list of hosts:

    {"name": "primary", "role": "primary" | "replica" | "pooler",
     "spec": "docker://pg-primary" | "ssh://admin@10.0.1.5",
     "service_user": "postgres",
     "data_dir": "...",                     # postgres hosts
     "pgbackrest_config": "...",            # the host that runs backups
     "pooler_ini": "...", "auth_file": "...",   # pooler hosts
     "files": {"<path on the host>": "<sha256 hex of the rendered text>"}}
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import config, hostctl, render
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


def local_service_user() -> str:
    return hostctl.SERVICE_USER if os.geteuid() == 0 else getpass.getuser()


def local_inventory(cfg: config.PlatformConfig, passwords: dict[str, str]) -> list[Host]:
    """Every host of a local stack, with the texts the renderers give for its settings."""
    from infra.backends import local
    from infra.backends.local_layout import layout, replicas

    user = local_service_user()
    tls = layout(cfg).tls
    unused = "not-a-password"  # the rendered config files never contain a password
    primary = local.primary_props(cfg, unused, tls)
    backup = local.backup_props(cfg, unused)
    data_dir = primary["data_dir"]
    hosts = [Host(
        name="primary", role="primary", spec="local://", service_user=user, data_dir=data_dir,
        pgbackrest_config=backup["config_path"],
        files={f"{data_dir}/postgresql.conf": sha256(primary["postgresql_conf"]),
               f"{data_dir}/pg_hba.conf": sha256(primary["pg_hba_conf"]),
               backup["config_path"]: sha256(backup["pgbackrest_conf"]),
               backup["schedule_path"]: sha256(backup["schedule"])})]
    for rep in replicas(cfg):
        props = local.replica_props(cfg, rep, unused, unused, tls)
        hosts.append(Host(
            name=rep.name, role="replica", spec="local://", service_user=user,
            data_dir=props["data_dir"],
            files={f"{props['data_dir']}/postgresql.conf": sha256(props["postgresql_conf"]),
                   f"{props['data_dir']}/pg_hba.conf": sha256(props["pg_hba_conf"])}))
    app_pw = passwords[f"{cfg.postgres.app_role}-password"]
    admin_pw = passwords[f"{cfg.pooler.admin_user}-password"]
    from infra.backends import tenant_users  # the auth file as the local backend renders it

    userlist = (tenant_users.auth_file(cfg, app_pw, admin_pw, passwords["tenant_admin-password"],
                                       passwords["pgbouncer_auth-password"])
                if "pgbouncer_auth-password" in passwords
                else render.userlist_txt(render.pooler_users(cfg, app_pw, admin_pw)))
    pooler = local.pooler_props(cfg, userlist, tls)
    hosts.append(Host(
        name="pooler", role="pooler", spec="local://", service_user=user,
        pooler_ini=pooler["ini_path"], auth_file=pooler["auth_file"],
        files={pooler["ini_path"]: sha256(pooler["pgbouncer_ini"]),
               pooler["auth_file"]: sha256(userlist)}))
    return hosts


def exported_inventory(outputs: dict[str, Any]) -> list[Host]:
    """The `testinfra_hosts` output of a dev or prod stack."""
    raw = outputs.get("testinfra_hosts")
    if not isinstance(raw, list) or not raw:
        raise RuntimeError("this stack exports no `testinfra_hosts` output; the dev and prod "
                           "programs must export their hosts (see docs/testing.md)")
    keys = set(Host.__dataclass_fields__)
    return [Host(**{k: v for k, v in item.items() if k in keys}) for item in raw]
