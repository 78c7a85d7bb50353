"""P3, P3b, P3c as table rows, from bench/tenants.py's measurements.

P3 compares the engine with a per-schema loop (a) and the DDL floor (b) on
`tenants` schemas; P3c is the no-op pass over them; P3b runs the engine alone
on `tenants_big` schemas (10,000 in a full run) against the P3 figure. Usage::

    .venv/bin/python -m bench.tenant_scale [--quick] [--no-big]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench import common, tenants
from bench.common import Figure, Sizes


def run(sizes: Sizes, big: bool = True) -> list[Figure]:
    t = tenants.measure(sizes.tenants)
    n = t.n
    per = f"{t.engine:.2f} s ({t.engine / n * 1000:.1f} ms/tenant)"
    figs = [
        common.report(Figure(
            "P3", f"create and migrate {n} tenant schemas, vs (a) a per-schema loop",
            per, f"{t.a:.2f} s ({t.a / n * 1000:.1f} ms/tenant, (a))",
            f"{t.a / t.engine:.2f}× faster", "≥ 2.5× faster", t.a / t.engine >= 2.5,
            (t.command,))),
        common.report(Figure(
            "P3", f"create and migrate {n} tenant schemas, vs (b) the DDL floor",
            per, f"{t.b:.2f} s ({t.b / n * 1000:.1f} ms/tenant, (b))",
            common.x(t.engine / t.b), "≤ 1.2×", t.engine / t.b <= 1.2, (t.command,))),
        common.report(Figure(
            "P3c", f"no-op pass over {n} up-to-date tenants (apply: connect + survey)",
            f"{t.noop * 1000:.0f} ms", f"{t.a_noop * 1000:.0f} ms ((a): a connection per schema)",
            "-", "≤ 50 ms", t.noop <= 0.050, (t.command,),
            note=f"plan only: {t.survey * 1000:.0f} ms")),
    ]
    if big:
        b = tenants.measure(sizes.tenants_big, baselines=False)
        # The same engine and server, without the tenant-role files (issue #12's 1.3x goal).
        bare = tenants.measure(sizes.tenants_big, baselines=False, tenant_roles=False)
        roles_ratio = b.engine / bare.engine
        ratio = b.engine / t.engine
        figs.append(common.report(Figure(
            "P3b", f"create and migrate {b.n} tenant schemas (engine only)",
            f"{b.engine:.2f} s ({b.engine / b.n * 1000:.1f} ms/tenant)",
            f"{t.engine:.2f} s for {n} (P3)", common.x(ratio),
            f"≤ {1.1 * b.n / n:.0f}×",
            ratio <= 1.1 * b.n / n, (b.command + "  # engine part only",),
            note=f"no-op pass over {b.n}: {b.noop * 1000:.0f} ms")))
        figs.append(common.report(Figure(
            "P3b", f"{b.n} tenant schemas with a login role each, vs without tenant roles",
            f"{b.engine:.2f} s ({b.engine / b.n * 1000:.1f} ms/tenant)",
            f"{bare.engine:.2f} s ({bare.engine / b.n * 1000:.1f} ms/tenant, tenant track "
            f"without {', '.join(tenants.TENANT_ROLE_FILES)}, no key)",
            common.x(roles_ratio), "≤ 1.3×", roles_ratio <= 1.3,
            (b.command + "  # with roles, then without, same run",))))
    return figs


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes for development")
    ap.add_argument("--no-big", action="store_true", help="skip P3b (10,000 tenants)")
    args = ap.parse_args(argv)
    run(Sizes.quick() if args.quick else Sizes(), big=not args.no_big)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
