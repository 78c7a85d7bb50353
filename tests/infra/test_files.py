"""The files on the hosts are exactly their templates' renderings for the stack's settings."""

from __future__ import annotations

from tests.infra.conftest import remote
from tests.infra.inventory import Host, sha256


def test_rendered_files_on_every_host_equal_the_renderings(hosts: list[Host]) -> None:
    differ = []
    checked = 0
    for host in hosts:
        assert host.files, f"{host.name}: the inventory lists no rendered files"
        r = remote(host)
        for path, digest in sorted(host.files.items()):
            f = r.file(path)
            if not f.is_file:
                differ.append(f"{host.name}:{path} is missing")
            elif sha256(f.content) != digest:
                differ.append(f"{host.name}:{path} differs from its rendering")
            checked += 1
    assert not differ, differ
    assert checked >= 4


def test_rendered_files_carry_the_do_not_edit_header(hosts: list[Host]) -> None:
    for host in hosts:
        r = remote(host)
        for path in host.files:
            lines = r.file(path).content_string.splitlines()
            # A script carries the header on the line after its #! line.
            head = lines[1] if lines[0].startswith("#!") else lines[0]
            # A template's rendering names its template; a file rendered in Python
            # (prod's bundle) names its module.
            assert "Rendered by pg-platform" in head and "Do not edit" in head, \
                (host.name, path, head)
