"""The host tier's platform: the prod program rendered under mocks, booted for real.

`Tier.up()` makes the run's bridge, the hosts' volumes, the AWS and package-site
stand-ins (world.py), renders the prod program with those addresses and ids
(program.py), stores each host's bundle in Secrets Manager and the bucket in S3
as `pulumi up` would, then boots the primary and the replica in parallel: each
runs its #cloud-config through the cloud-init stand-in, whose runcmd is the
rendered pgp-setup. Then the schema step runs as the program's Schema and
TimescalePolicies resources would (their providers' `create`, with the inputs
the program gave them). `Tier.down()` removes everything; the watchdog does the
same if this process dies first (cleanup.py).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.schema.resource import SchemaProvider
from infra.timescaledb.resource import PoliciesProvider
from tests.hosts import cleanup, program, rootfs
from tests.hosts.hostns import Host, Network, Volume
from tests.hosts.world import World

logger = logging.getLogger("host-tier")
ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / ".tools" / "hosts"  # the cached root file systems
# Each run's files (ledger, volumes, keys, the program's state_dir): under .state/,
# where pg-platform:state_dir may point.
RUNS = ROOT / ".state" / "host-tier"
BOOT_TIMEOUT = 600.0
BOOT_UNITS = ("cron.service", "pgbouncer.service")
# A bootstrap run by a retrying unit (day2's) is started by runcmd without waiting;
# the host is up when the unit leaves its mark.
SETUP_UNIT = "/etc/systemd/system/pg-platform-setup.service"
SETUP_DONE = "/var/lib/pg-platform/setup-done"
SETUP_LOG = "/var/log/pg-platform-setup.log"


def retrying_bootstrap(user_data: str) -> bool:
    return SETUP_UNIT in user_data


def sweep_stale() -> None:
    """Runs whose harness died and whose watchdog did not finish (e.g. a reboot)."""
    for ledger in (RUNS).glob("*/ledger.jsonl"):
        owner = ledger.parent / "owner"
        pid, started = ([*owner.read_text().split(), "0", ""])[:2] if owner.exists() else \
            ("0", "")
        if not cleanup.alive(int(pid), started):
            left = cleanup.sweep(ledger)
            if left:
                raise RuntimeError(f"stale host-tier run {ledger.parent}: {left}")
    for run in (RUNS).glob("*"):
        if run.is_dir() and not (run / "ledger.jsonl").exists():
            shutil.rmtree(run, ignore_errors=True)


@dataclass
class Timings:
    rootfs: float = 0.0
    rootfs_built: bool = False
    boot: dict[str, float] = field(default_factory=dict)


@dataclass
class Tier:
    """`replicas` and `changes` (settings merged per section) shape the platform; the
    default is test_boot.py's: a primary and one replica, the prod stack's settings."""

    replicas: int = 1
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: list[Host] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    rendered: program.Rendered | None = None
    world: World | None = None

    def __post_init__(self) -> None:
        self.run_dir = RUNS / self.run_id
        self.ledger = cleanup.Ledger(self.run_dir / "ledger.jsonl")
        # A /24 per run, picked from the run id; 10.213.0.0/16 is the tier's.
        self.network = Network(bridge=f"pgp{self.run_id}br",
                               prefix=f"10.213.{int(self.run_id, 16) % 250 + 1}")

    # -- bring-up ---------------------------------------------------------------
    def up(self) -> None:
        (self.run_dir / "owner").write_text(
            f"{os.getpid()} {cleanup.start_time(os.getpid())}\n")
        self.watchdog = cleanup.start_watchdog(self.ledger.path)
        root, took = rootfs.ensure(BASE)
        self.timings.rootfs, self.timings.rootfs_built = took, took > 5
        logger.info("rootfs %s: %s in %.0fs", root.name,
                    "built (debootstrap)" if self.timings.rootfs_built else "cached", took)
        self.network.create(self.ledger)
        names = ["primary", *[f"replica-{i}" for i in range(1, self.replicas + 1)]]
        self.ips = {n: self.network.address(11 + i) for i, n in enumerate(names)}
        self.vols = {n: f"vol-0{self.run_id}{i:012x}" for i, n in enumerate(names)}
        self._ssh_key()
        self.installed = rootfs.installed(root)
        raw = program.settings(self.network.subnet, self.public_key, self.installed,
                               str(self.run_dir / "state"), self.replicas, self.changes)
        self.state: dict[str, tuple[str, dict[str, Any]]] = {}
        self.rendered = r = program.render(raw, self.ips, self.vols, self.state)
        self._ssh_config()
        self.world = World(self.run_dir, self.ledger, self.network.address(1),
                           self.network.address(2), r.cfg.aws.region if r.cfg.aws else "",
                           r.bucket)
        self.world.start()
        self.world.create_bucket()
        for plan in r.hosts:
            self.world.put_secret(plan.secret_id, plan.bundle)
        logger.info("aws: moto behind socat TLS on %s:443 (bucket %s, %d secret bundles); "
                    "package sites on %s:443", self.network.address(1), r.bucket,
                    len(r.hosts), self.network.address(2))
        for i, plan in enumerate(r.hosts):
            vol = Volume(self.run_dir / f"{plan.name}.volume", plan.volume_id)
            vol.attach(self.ledger)
            self.hosts.append(Host(
                name=plan.name, index=i, ip=plan.ip, instance_id=f"i-0{self.run_id}{i:012x}",
                rootfs=root, run_dir=self.run_dir, volume=vol, network=self.network,
                ledger=self.ledger, run_id=self.run_id))
        if retrying_bootstrap(r.hosts[0].user_data):
            self.boot_all(self.hosts)     # as EC2 launches them: at once
        else:
            # Main's replica bootstrap tries pg_basebackup once, as soon as the primary
            # answers and before the primary has made its roles, and never retries
            # (finding F2, docs/testing.md): the primary goes first.
            logger.info("FINDING F2: the bootstrap runs once, so a replica launched with "
                        "the primary races its roles; booting the primary first")
            for h in self.hosts:
                self.boot(h)
        self.schema_step()

    @property
    def login_user(self) -> str:
        """The SSH login the program exports for its hosts (testinfra_hosts' ssh:// spec)."""
        spec = str(self.outputs["testinfra_hosts"][0]["spec"])
        return spec.removeprefix("ssh://").split("@", 1)[0]

    def _ssh_key(self) -> None:
        key = self.run_dir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "host-tier",
                        "-f", str(key)], check=True)

    def _ssh_config(self) -> None:
        key = self.run_dir / "id_ed25519"
        (self.run_dir / "ssh_config").write_text(
            f"Host {self.network.prefix}.*\n  User {self.login_user}\n  IdentityFile {key}\n"
            "  IdentitiesOnly yes\n  BatchMode yes\n  StrictHostKeyChecking accept-new\n"
            f"  UserKnownHostsFile {self.run_dir / 'known_hosts'}\n  ConnectTimeout 10\n")

    @property
    def public_key(self) -> str:
        return (self.run_dir / "id_ed25519.pub").read_text()

    @property
    def keys_in_bundle(self) -> bool:
        """Day2 delivers SSH keys in each host's bundle (pg-platform:aws.ssh_public_keys)."""
        assert self.rendered is not None
        return "ssh_public_keys" in self.rendered.raw["aws"]

    @property
    def ssh_config(self) -> Path:
        return self.run_dir / "ssh_config"

    def plan(self, host: Host) -> program.HostPlan:
        assert self.rendered is not None
        return next(p for p in self.rendered.hosts if p.name == host.name)

    def boot_all(self, hosts: list[Host]) -> None:
        errors: list[BaseException] = []

        def one(h: Host) -> None:
            try:
                self.boot(h)
            except BaseException as exc:  # reported below, with the host's log
                errors.append(exc)
                for other in hosts:   # a replica would wait for a failed primary
                    if other is not h:
                        other.stop()

        threads = [threading.Thread(target=one, args=(h,)) for h in hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def boot(self, host: Host) -> None:
        """Power on: a fresh copy of the rootfs, then cloud-init's first boot."""
        assert self.world is not None
        started = time.monotonic()
        host.start()
        host.write("/etc/hosts", f"127.0.0.1 localhost\n{host.ip} {host.name}\n"
                   + self.world.hosts_file_lines())
        host.write("/usr/local/share/ca-certificates/pgp-host-tier.crt",
                   self.world.ca_file.read_text())
        host.run(["update-ca-certificates"])
        self._system_boot(host)
        user_data = self.plan(host).user_data
        doc = yaml.safe_load(user_data)
        # No key in the bundle: the stack has no access path (issue 17), so the key
        # goes where an EC2 key pair would, to cloud-init's default user.
        key = "" if self.keys_in_bundle else self.public_key
        host.write("/var/lib/cloud/instance/cloud-config.json", json.dumps(
            {"default_user": self.login_user, "ssh_key": key, **doc}), 0o600)
        log = host.top / "cloud-init.log"
        proc = host.run(["/usr/bin/python3", "/usr/local/lib/pgp-harness/cloud-init",
                         "/var/lib/cloud/instance/cloud-config.json"], check=False,
                        timeout=BOOT_TIMEOUT, log=log)
        if proc.returncode:
            raise RuntimeError(f"{host.name}: first boot failed ({proc.returncode}); "
                               f"end of {log}:\n{proc.stdout}")
        if retrying_bootstrap(user_data):
            self._wait_setup(host, started)
        took = time.monotonic() - started
        self.timings.boot[f"{host.name}.{host.generation}"] = took
        logger.info("boot %s (%s, generation %d): user-data ran in %.0fs; log %s",
                    host.name, host.ip, host.generation, took, log)

    @staticmethod
    def _wait_setup(host: Host, started: float) -> None:
        while not host.path(SETUP_DONE).exists():
            if time.monotonic() - started > BOOT_TIMEOUT:
                log = host.path(SETUP_LOG)
                tail = log.read_text()[-3000:] if log.exists() else "(no setup log)"
                raise RuntimeError(f"{host.name}: pg-platform-setup did not finish in "
                                   f"{BOOT_TIMEOUT:.0f}s; end of {SETUP_LOG}:\n{tail}")
            time.sleep(1)

    @staticmethod
    def _system_boot(host: Host) -> None:
        """What systemd does before cloud-init's user scripts: /run's tmpfiles (e.g.
        /run/postgresql), then the enabled services the steps touch (cron, and
        Debian's pgbouncer.service with its packaged configuration). The rest of
        multi-user.target (e2scrub, pstore, nvmf, timers) plays no part here."""
        host.run(["systemd-tmpfiles", "--create", "--boot"])
        # tmpfiles' --boot made /run/nologin ("System is booting up"); at the end of a
        # boot systemd-user-sessions.service removes it, and then logins work.
        host.run(["rm", "-f", "/run/nologin"])
        for unit in BOOT_UNITS:
            proc = host.run(["systemctl", "start", unit], check=False)
            if proc.returncode:
                logger.info("boot %s: %s did not start (as on a real boot, not fatal): %s",
                            host.name, unit, proc.stderr.strip()[-300:])

    def schema_step(self) -> None:
        """The program's Schema and TimescalePolicies resources, run from this machine
        as `pulumi up` runs them (against primary_dsn)."""
        assert self.rendered is not None
        started = time.monotonic()
        SchemaProvider().create(dict(self.rendered.schema_props))
        PoliciesProvider().create(dict(self.rendered.policy_props))
        logger.info("schema step: sql/ and the TimescaleDB policies applied in %.0fs",
                    time.monotonic() - started)

    def rebuild(self, host: Host) -> None:
        """Terminate the instance and launch a new one on the same volume and address."""
        host.stop()
        subprocess.run(["ssh-keygen", "-R", host.ip, "-f", str(self.run_dir / "known_hosts")],
                       capture_output=True, check=False)
        self.boot(host)

    def rerender(self, changes: dict[str, Any]) -> program.Rendered:
        """The program again with `changes` merged into the settings (a day-2 `up`);
        same addresses, ids and TLS material. Becomes the tier's current rendering."""
        assert self.rendered is not None
        raw = json.loads(json.dumps(self.rendered.raw))
        for key, value in changes.items():
            if isinstance(value, dict):
                raw.setdefault(key, {}).update(value)
            else:
                raw[key] = value
        self.rendered = program.render(raw, self.ips, self.vols, self.state)
        return self.rendered

    # -- access -------------------------------------------------------------------
    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def outputs(self) -> dict[str, Any]:
        assert self.rendered is not None
        return self.rendered.outputs

    def stack_snapshot(self) -> Path:
        """What `pytest tests/infra --stack-json` reads in place of a Pulumi stack: the
        settings, the outputs (with `testinfra_hosts`) and the generated passwords."""
        assert self.rendered is not None
        path = self.run_dir / "stack.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps({"stack": "prod", "config": self.rendered.raw,
                                    "outputs": self.rendered.outputs,
                                    "passwords": self.rendered.passwords}))
        return path

    # -- tear-down ----------------------------------------------------------------
    def down(self) -> list[str]:
        for h in self.hosts:
            h.stop()
        left = cleanup.sweep(self.ledger.path)
        if not left:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return left
