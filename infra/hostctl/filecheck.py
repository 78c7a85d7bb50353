"""Rendered files checked by the installed tools themselves, before any node is touched.

A value the config loader cannot judge (a setting only the server knows, a
combination PgBouncer refuses) must not first show up as a server that does
not start halfway through `up`. Each check runs the real program on a scratch
copy, never on the node's own files:

- postgresql.conf: ``postgres -C`` parses the file with the server's own GUC
  code (unknown names, bad units, values out of range) and exits without
  touching a data directory.
- pgbouncer.ini: PgBouncer starts in the foreground on a scratch copy that
  listens on a scratch Unix socket only, and is stopped once it logs
  "process up"; TLS files that do not exist yet (a first preview) are stood in
  for by a throw-away certificate.
- pgbackrest.conf: ``pgbackrest help <command>`` validates every option the
  backup, archive-push and restore commands read; a warning (an unknown
  option, one in the wrong section) counts as a refusal.

A program that is not installed here (a prod preview on a laptop) is skipped
with a warning, as infra/pgparams.py does. Results are cached per text.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from infra import tls
from infra.errors import ConfigError
from infra.hostctl.files import chown_service, make_dir, write_file
from infra.hostctl.proc import pid_from_file, service_cmd, terminate, wait_until

logger = logging.getLogger(__name__)

PGBOUNCER = "/usr/sbin/pgbouncer"
PGBACKREST = "pgbackrest"
PGBACKREST_COMMANDS = ("backup", "archive-push", "restore")
_INI_LINE = re.compile(r"^\s*([A-Za-z_]+)\s*=\s*(.*?)\s*$")
# pgbouncer.ini settings that name this host's files or sockets: pointed at the scratch copy.
_SCRATCH_KEYS = ("listen_addr", "unix_socket_dir", "pidfile", "logfile", "auth_file")
_TLS_FILE_KEYS = ("client_tls_cert_file", "client_tls_key_file", "client_tls_ca_file",
                  "server_tls_ca_file", "server_tls_cert_file", "server_tls_key_file")


_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [0-9:.]+ [A-Z]+ \[\d+\] ")


def _refuse(what: str, where: str, tool: str, message: str) -> ConfigError:
    lines = [_LOG_PREFIX.sub("", ln) for ln in message.strip().splitlines() if ln.strip()]
    return ConfigError(f"{what} rendered for {where} was refused by {tool}: "
                       + " | ".join(lines[-6:]))


def _scratch() -> tempfile.TemporaryDirectory[str]:
    tmp = tempfile.TemporaryDirectory(prefix="pgp-check-", dir="/tmp")
    Path(tmp.name).chmod(0o700)
    chown_service(Path(tmp.name))
    return tmp


def postgres_binary(version: int) -> Path:
    return Path(f"/usr/lib/postgresql/{version}/bin/postgres")


@functools.lru_cache(maxsize=64)
def check_postgresql_conf(text: str, version: int, where: str) -> None:
    """:raises ConfigError: with the server's own message, naming the node (`where`)."""
    binary = postgres_binary(version)
    if not binary.exists():
        logger.warning("postgres %s is not installed here; postgresql.conf for %s is not "
                       "checked by the server", version, where)
        return
    with _scratch() as tmp:
        write_file(Path(tmp) / "postgresql.conf", text)
        proc = subprocess.run(service_cmd([str(binary), "-D", tmp, "-C", "server_version"]),
                              capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        noise = "skipping missing configuration file"
        message = "\n".join(ln for ln in proc.stderr.splitlines() if noise not in ln)
        raise _refuse("postgresql.conf", where, f"postgres {version} (postgres -C)",
                      message.replace(tmp, "<scratch copy>"))


def _scratch_tls(directory: Path) -> dict[str, str]:
    ca = tls.make_ca("pg-platform config check")
    server = tls.make_server_cert(ca, "pg-platform config check", ["localhost"])
    files = {"ca": directory / "ca.crt", "cert": directory / "server.crt",
             "key": directory / "server.key"}
    write_file(files["ca"], ca.cert_pem, 0o644)
    write_file(files["cert"], server.cert_pem, 0o644)
    write_file(files["key"], server.key_pem, 0o600)
    return {k: str(v) for k, v in files.items()}


def pgbouncer_scratch_ini(text: str, directory: Path) -> str:
    """The same file, listening on a Unix socket in `directory` only, with its files there."""
    stand_in: dict[str, str] | None = None
    out: list[str] = []
    section = ""
    scratch = {"listen_addr": "", "unix_socket_dir": str(directory),
               "pidfile": str(directory / "pgbouncer.pid"),
               "logfile": str(directory / "pgbouncer.log"),
               "auth_file": str(directory / "userlist.txt")}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip().lower()
            if section == "pgbouncer":  # every scratch key first; the file's own are replaced
                out.append(line)
                out.extend(f"{name} = {value}" for name, value in scratch.items())
                continue
        m = _INI_LINE.match(line)
        if section == "pgbouncer" and m:
            name, value = m.group(1), m.group(2)
            if name in _SCRATCH_KEYS:
                continue
            elif name in _TLS_FILE_KEYS and not Path(value).is_file():
                stand_in = stand_in or _scratch_tls(directory)
                kind = "key" if name.endswith("key_file") else (
                    "ca" if name.endswith("ca_file") else "cert")
                line = f"{name} = {stand_in[kind]}"
        out.append(line)
    return "\n".join(out) + "\n"


@functools.lru_cache(maxsize=64)
def check_pgbouncer_ini(text: str, where: str, timeout: float = 15.0) -> None:
    """:raises ConfigError: with PgBouncer's own message when it refuses to start."""
    binary = shutil.which(PGBOUNCER) or shutil.which("pgbouncer")
    if not binary:
        logger.warning("pgbouncer is not installed here; %s is not checked by it", where)
        return
    with _scratch() as tmp:
        d = Path(tmp)
        make_dir(d / "run", 0o700)
        write_file(d / "run" / "userlist.txt", "")
        ini = d / "pgbouncer.ini"
        write_file(ini, pgbouncer_scratch_ini(text, d / "run"))
        with open(d / "stderr", "wb") as err:
            proc = subprocess.Popen(service_cmd([binary, str(ini)]), stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err, start_new_session=True)

        def settled() -> bool:
            up = "process up" in (d / "stderr").read_text(errors="replace")
            return up or proc.poll() is not None

        wait_until(settled, timeout)
        failed = proc.poll() is not None
        if not failed:
            # Signal PgBouncer itself: runuser (as root) waits 2 s before passing a signal on.
            pid = pid_from_file(d / "run" / "pgbouncer.pid") or proc.pid
            terminate(pid, lambda: pid_from_file(d / "run" / "pgbouncer.pid"))
            proc.wait(timeout=10)
        message = (d / "stderr").read_text(errors="replace")
    if failed:
        raise _refuse("pgbouncer.ini", where, "pgbouncer", message.replace(tmp, "<scratch>"))
    if "process up" not in message and not failed:
        logger.warning("pgbouncer did not report start-up for %s within %ss", where, timeout)


@functools.lru_cache(maxsize=64)
def check_pgbackrest_conf(text: str, stanza: str, where: str) -> None:
    """:raises ConfigError: with pgBackRest's message (an error or a warning)."""
    binary = shutil.which(PGBACKREST)
    if not binary:
        logger.warning("pgbackrest is not installed here; %s is not checked by it", where)
        return
    with _scratch() as tmp:
        conf = Path(tmp) / "pgbackrest.conf"
        write_file(conf, text)
        for command in PGBACKREST_COMMANDS:
            proc = subprocess.run(service_cmd([binary, f"--config={conf}", f"--stanza={stanza}",
                                               "help", command]),
                                  capture_output=True, text=True, timeout=60, check=False)
            said = [ln for ln in (proc.stderr + "\n" + proc.stdout).splitlines()
                    if ln.startswith(("WARN:", "ERROR:"))]
            if proc.returncode != 0 or said:
                raise _refuse("pgbackrest.conf", where, f"pgbackrest ({command} options)",
                              "\n".join(said or [proc.stderr]).replace(tmp, "<scratch>"))
