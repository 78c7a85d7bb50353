"""The patroni.yml files dev and prod deliver pass `patroni --validate-config` (Debian's
Patroni 3.0.2), checked in a private network and mount namespace that has the hosts'
addresses and names, with something listening on each etcd endpoint (tests/netns_validate.py).
The files are the ones the programs deliver under Pulumi mocks (tests/unit/test_ha_dev_prod.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import tls
from tests.support import scratch_dir
from tests.unit import cloud_mocks as cm
from tests.unit.test_ha_dev_prod import NODES, dev_files, dev_raw, prod_files, prod_raw

ROOT = Path(__file__).resolve().parents[2]
# The dev containers' fixed addresses (infra/backends/docker_ha.py): the database
# containers by name, and the etcd containers, which patroni.yml names by address.
DEV_ADDRESSES = {"primary": "172.28.16.20", "replica-1": "172.28.16.21",
                 "replica-2": "172.28.16.22", **{f"172.28.16.{10 + i}": f"172.28.16.{10 + i}"
                                                 for i in (1, 2, 3)}}


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    path = scratch_dir("pgp-havalidate-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def validate(scratch: Path, name: str, texts: dict[str, str],
             hosts: dict[str, str]) -> dict[str, list[Any]]:
    """Write the files, then validate them all in one namespace; {path: [rc, output]}."""
    paths = []
    listen: set[tuple[str, int]] = set()
    for node, text in texts.items():
        path = scratch / f"{name}-{node}.yml"
        path.write_text(text)
        path.chmod(0o600)
        paths.append(str(path))
        for endpoint in yaml.safe_load(text)["etcd3"]["hosts"]:
            host, _, port = endpoint.rpartition(":")
            listen.add((hosts.get(host, host), int(port)))
    spec = scratch / f"{name}-spec.json"
    spec.write_text(json.dumps({"hosts": hosts, "listen": sorted(listen), "files": paths}))
    proc = subprocess.run(["unshare", "--net", "--mount", "--fork", "--", sys.executable,
                           "-m", "tests.netns_validate", str(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, list[Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_dev_patroni_files_pass_patroni_validate_config(scratch: Path) -> None:
    files = dev_files(cm.run(dev_raw(), "dev"))
    result = validate(scratch, "dev", {n: files[n]["patroni_text"] for n in NODES},
                      DEV_ADDRESSES)
    assert len(result) == 3
    assert {p: r for p, r in result.items() if r[0] != 0} == {}


def test_prod_patroni_files_pass_patroni_validate_config(scratch: Path) -> None:
    files = prod_files(cm.run(prod_raw(), "prod"))
    texts = {n: files[n]["patroni_text"] for n in NODES}
    addresses = {yaml.safe_load(t)["postgresql"]["connect_address"].rpartition(":")[0]
                 for t in texts.values()}
    result = validate(scratch, "prod", texts, {a: a for a in sorted(addresses)})
    assert len(result) == 3
    assert {p: r for p, r in result.items() if r[0] != 0} == {}


def test_validate_config_does_refuse_a_broken_file(scratch: Path) -> None:
    """The check itself can fail: an etcd endpoint nobody answers on is refused."""
    files = prod_files(cm.run(prod_raw(), "prod"))
    doc = yaml.safe_load(files["primary"]["patroni_text"])
    hosts = {h.rpartition(":")[0]: h.rpartition(":")[0] for h in doc["etcd3"]["hosts"]}
    doc["etcd3"]["hosts"] = [h.replace(":2379", ":2390") for h in doc["etcd3"]["hosts"]]
    path = scratch / "broken.yml"
    path.write_text(yaml.safe_dump(doc))
    spec = scratch / "broken-spec.json"
    spec.write_text(json.dumps({"hosts": hosts, "listen": [], "files": [str(path)]}))
    proc = subprocess.run(["unshare", "--net", "--mount", "--fork", "--", sys.executable,
                           "-m", "tests.netns_validate", str(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    rc, output = json.loads(proc.stdout.strip().splitlines()[-1])[str(path)]
    assert rc != 0 and "is not reachable" in output


def haproxy_check(scratch: Path, name: str, cfg_text: str, ca_text: str) -> tuple[int, str]:
    """`haproxy -c -f` on the HAProxy container's config, at the container's own paths: a
    private mount namespace with a tmpfs over /usr/local/etc, holding its two uploads."""
    work = scratch / name
    work.mkdir(exist_ok=True)
    (work / "haproxy.cfg").write_text(cfg_text)
    (work / "ca.crt").write_text(ca_text)
    script = ("mount --make-rprivate / && mount -t tmpfs tmpfs /usr/local/etc && "
              "mkdir -p /usr/local/etc/haproxy && "
              f"cp {work}/haproxy.cfg {work}/ca.crt /usr/local/etc/haproxy/ && "
              "/usr/sbin/haproxy -c -f /usr/local/etc/haproxy/haproxy.cfg")
    proc = subprocess.run(["unshare", "--mount", "--fork", "--", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def dev_haproxy_uploads() -> dict[str, str]:
    run = cm.run(dev_raw(), "dev")
    proxy = run.mocks.one("docker:index/container:Container", "haproxy")
    return {u["file"]: u["content"] for u in proxy.get("uploads")}


def real_ca() -> str:
    """A real CA certificate (the mocks' is a placeholder): haproxy -c loads the file."""
    return tls.make_ca("pg-platform-test").cert_pem


def test_dev_haproxy_cfg_passes_haproxy_check(scratch: Path) -> None:
    uploads = dev_haproxy_uploads()
    cfg_text = uploads["/usr/local/etc/haproxy/haproxy.cfg"]
    rc, out = haproxy_check(scratch, "dev-haproxy", cfg_text, real_ca())
    assert rc == 0, out
    assert "Configuration file is valid" in out


def test_haproxy_check_does_refuse_a_broken_cfg(scratch: Path) -> None:
    """The check can fail: a health check naming a CA file that is not there."""
    cfg_text = dev_haproxy_uploads()["/usr/local/etc/haproxy/haproxy.cfg"].replace(
        "/usr/local/etc/haproxy/ca.crt", "/usr/local/etc/haproxy/missing.crt")
    rc, out = haproxy_check(scratch, "dev-haproxy-broken", cfg_text, real_ca())
    assert rc != 0 and "missing.crt" in out
