"""The benchmark's output: the machine it ran on, the table, CSV/JSON and throughput plots."""

import csv
import io
import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


def environment(backend_names):
    """What the table's numbers were measured on."""
    from .._info import config_info
    from .._platform import blas_in_use
    from .peers import get

    info = config_info()
    versions = {}
    for name in backend_names:
        backend = get(name)
        if backend.available()[0]:
            try:
                versions[name] = backend.version()
            except Exception as error:  # a broken peer install is reported, not fatal
                versions[name] = f"unavailable ({error})"
    blas = "; ".join(blas_in_use())
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": info["cpu"],
        "cores": info["cores"],
        "blas": blas,
        "blas_pins": info["blas_pin_warning"],
        "threading_layer": info["threading_layer"],
        "threads": info["num_threads"],
        "python": info["python"],
        "platform": platform.platform(),
        "versions": versions,
    }


def format_table(rows, env):
    """The results as a plain-text table with a header describing the machine."""
    lines = [
        f"# {env['date']}  {env['cpu']}, {env['cores']} cores, {env['threads']} threads, "
        f"BLAS {env['blas']}, Numba layer {env['threading_layer']}",
        "# " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        *([f"# WARNING: {env['blas_pins']}"] if env.get("blas_pins") else []),
        "# /GEMM: our step over its own products on the GEMM it ran them on (gemm); /limit: each step over "
        "the same products on the fastest GEMM measured in this run (limit by); first s: the first call "
        "(compilation, tracing), never in the medians",
        f"{'shape':<42} {'backend':<13} {'median ms':>10} {'IQR ms':>15} {'GFLOP/s':>8} {'gemm':>6} {'/GEMM':>6} "
        f"{'/limit':>6} {'limit by':>8} {'vs best peer':>12} {'peak MB':>8} {'/inputs':>7} {'first s':>8}",
    ]
    for row in rows:
        shape = f"{row['layout']} n={row['n']} d={row['d']} m={row['m']} T={row['T']} {row['dtype']}"
        if "median_s" not in row:
            lines.append(f"{shape:<42} {row['backend']:<13} {row['note']}")
            continue
        speedup = f"{row['speedup_over_best_peer']:.2f}x" if row.get("speedup_over_best_peer") else ""
        peak = "" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:8.1f}"
        ratio = "" if row["peak_over_inputs"] is None else f"{row['peak_over_inputs']:7.2f}"
        over_gemm, over_limit = (  # no GEMMs for a round
            "" if math.isnan(row[key]) else f"{row[key]:6.2f}" for key in ("over_gemm", "over_limit")
        )
        lines.append(
            f"{shape:<42} {row['backend']:<13} {row['median_s'] * 1e3:10.2f} "
            f"{row['q25_s'] * 1e3:7.2f}-{row['q75_s'] * 1e3:<7.2f} {row['gflops']:8.1f} {row['gemm'] or '':>6} "
            f"{over_gemm:>6} {over_limit:>6} {row['limit_gemm'] or '':>8} {speedup:>12} {peak:>8} {ratio:>7} "
            f"{row.get('first_call_s') or float('nan'):8.2f}"
        )
    speedups = [r["speedup_over_best_peer"] for r in rows if r.get("speedup_over_best_peer")]
    if speedups:
        lines.append(
            f"# speedup over the best peer: geometric mean {math.exp(np.mean(np.log(speedups))):.2f}x, "
            f"min {min(speedups):.2f}x, over {len(speedups)} points"
        )
    return "\n".join(lines)


def _plots(rows, points, out):
    """Throughput against d, m and T, one line per backend, for each layout's sweeps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    # Sweeps vary one size around the first point of each layout; along T the per-task sweep
    # also varies n (T n is kept fixed), so only d and m must match the base there.
    held = {"d": ("n", "m", "T"), "m": ("n", "d", "T"), "T": ("d", "m")}
    written = []
    for layout in dict.fromkeys(p.layout for p in points):
        base = asdict(next(p for p in points if p.layout == layout))
        timed = [r for r in rows if r["layout"] == layout and "median_s" in r and r["dtype"] == base["dtype"]]
        for axis, fixed in held.items():
            sweep = [r for r in timed if all(r[k] == base[k] for k in fixed)]
            if len({r[axis] for r in sweep}) < 2:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 3.8))
            for backend in dict.fromkeys(r["backend"] for r in sweep):
                ax.plot(
                    *zip(*sorted((r[axis], r["gflops"]) for r in sweep if r["backend"] == backend)),
                    marker="o",
                    label=backend,
                )
            ax.set_xscale("log", base=2)
            ax.set_xlabel(axis)
            ax.set_ylabel("GFLOP/s (one step)")
            ax.set_title(
                f"{layout}: throughput against {axis} ("
                + ", ".join(f"{k}={base[k]}" for k in fixed)
                + f", {base['dtype']})",
                fontsize=9,
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            name = f"throughput-{layout}-{axis}.png"
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            written.append(name)
    return written


def write_outputs(rows, env, points, out):
    """bench.json, bench.csv, table.txt and throughput plots in ``out``; returns the table text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(rows, env)
    (out / "bench.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1), encoding="utf-8")
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "bench.csv").write_text(buffer.getvalue(), encoding="utf-8")
    (out / "table.txt").write_text(table + "\n", encoding="utf-8")
    _plots(rows, points, out)
    return table
