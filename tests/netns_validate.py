"""Run `patroni --validate-config` on files rendered for other hosts, inside a private
network and mount namespace that has those hosts' addresses.

Patroni's validator resolves every address in the file, checks that the ports it would
listen on are free and that each etcd endpoint accepts a TCP connection. Files made for
dev containers or prod instances name addresses this machine does not have, so this
module, started as `unshare --net --mount --fork -- python -m tests.netns_validate SPEC`,
puts them on the namespace's loopback, maps the names in a private /etc/hosts, listens
on the etcd endpoints and validates each file. SPEC is JSON: {"hosts": {name: ip},
"listen": [[ip, port], ...], "files": [path, ...]}; it prints {path: [rc, output]}.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=30)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    _run("mount", "--make-rprivate", "/")
    hosts = Path(tempfile.mkdtemp()) / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(
        f"{ip} {name}\n" for name, ip in spec["hosts"].items()))
    _run("mount", "--bind", str(hosts), "/etc/hosts")
    _run("ip", "link", "set", "lo", "up")
    for ip in sorted(set(spec["hosts"].values())):
        _run("ip", "addr", "add", f"{ip}/32", "dev", "lo")
    listeners = []
    for ip, port in spec["listen"]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((ip, int(port)))
        s.listen(16)
        listeners.append(s)
    out = {}
    for path in spec["files"]:
        proc = subprocess.run(["/usr/bin/patroni", "--validate-config", path],
                              capture_output=True, text=True, timeout=60, check=False)
        out[path] = [proc.returncode, (proc.stdout + proc.stderr).strip()]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
