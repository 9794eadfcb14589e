"""Turn a reproduction run's records into results.json, CSVs, figures and report.md.

Each of the paper's claims is checked against the measured numbers with a threshold stated in
the claim; the verdict is computed, never written by hand.
"""

import csv
import io
import json
from datetime import datetime, timezone

from . import store
from .samplers import SAMPLERS
from .studies import STUDIES
from .studies._common import markdown_table


def claims(results, grid):
    """The paper's claims, each with the measured numbers, the threshold and a verdict: every
    study's of ``grid``, in order (see each study's ``claims``).

    Returns
    -------
    list of dict
        Keys ``claim``, ``measured`` (text), ``threshold`` (text), ``holds`` (bool, or ``None``
        for a claim the grid cannot test, whose ``measured`` gives the reason) and ``verdict``
        (one of :data:`VERDICTS`).
    """
    rows = [row for name in grid.studies for row in STUDIES[name].claims(results.get(name, []), grid)]
    return [{**row, "verdict": verdict(row)} for row in rows]


#: A claim's verdict: it holds, it fails, or the grid cannot test it.
VERDICTS = ("holds", "FAILS", "not evaluated")


def verdict(row):
    """``row``'s verdict, from its ``holds``."""
    return VERDICTS[2] if row["holds"] is None else VERDICTS[0] if row["holds"] else VERDICTS[1]


def _csv(records, fields):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _figures(results, grid, stage):
    """Write the PNG figures to ``stage(name)``; returns their names, or a sentence on why there are none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "figures skipped: matplotlib is not installed (pip install 'mtrl_fast[paper]')"
    return [name for study in grid.studies for name in STUDIES[study].figures(results.get(study, []), grid, plt, stage)]


def claims_table(rows):
    """The claims as a Markdown table."""
    return markdown_table(
        ["claim", "measured", "threshold", "verdict"],
        [[r["claim"], r["measured"], r["threshold"], verdict(r)] for r in rows],
    )


def _report(results, grid, rows, figures, profile=None):
    cfg = grid.pretrain
    samplers = sorted(
        {
            STUDIES[name].pretrain_config(cell, grid).sampler_for(cell.d, grid.r)
            for name in grid.studies
            for cell in STUDIES[name].cells(grid)
        }
    )
    parts = [
        "# Reproduction report",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `mtrl-fast reproduce`. "
        f"r = {grid.r}, {grid.seeds} seed(s), labels `{grid.label_kind}` with flip noise {grid.noise}; "
        f"pretraining: width {cfg.width}, {cfg.rounds} round(s) of {cfg.head_steps} head step(s) "
        f"(lr {cfg.head_lr}) then one first-layer step (lr {cfg.lr}, weight decay {cfg.weight_decay}), "
        f"`{cfg.loss}` loss, {cfg.layout} samples, n1 = n2 = "
        f"{cfg.samples_per_task if cfg.samples_per_task else '5 d'} per task; "
        f"{' and '.join(samplers)} sampler ({_sampler_note(samplers)}).",
        "",
        "## The paper's claims",
        "",
        claims_table(rows),
    ]
    for name in grid.studies:
        for section in STUDIES[name].tables(results.get(name, []), grid):
            parts += ["", section]
    parts += ["", "## Figures", ""]
    if isinstance(figures, str):
        parts.append(figures)
    else:
        parts += [f"![{name}]({name})" for name in figures]
    if profile is not None and profile["cells"]:
        parts += [
            "",
            f"## Where the time went ({profile['cells']} cells, summed)",
            "",
            "Sampling draws the inputs and their labels (one compiled pass); the kernels are the head and "
            "first-layer steps; the metrics, the subspace distance and energy; the probe, the downstream "
            "study's ridge probes.",
            "",
            profile_table(profile),
        ]
    return "\n".join(parts) + "\n"


def _sampler_note(names):
    """What the report says of the samplers the cells ran: the note of the last of them in
    ``SAMPLERS``'s order (the full sampler's alone, or the reduced one's, which relates it to the full)."""
    return SAMPLERS[[name for name in SAMPLERS if name in names][-1]].note


def profile_table(timing):
    """A Markdown table of where the cells' time went (``experiments.profile``)."""
    total = timing["seconds"] or 1.0
    rows = [[name, f"{seconds:.1f}", f"{100 * seconds / total:.0f}%"] for name, seconds in timing["parts"].items()]
    rows.append(["all", f"{timing['seconds']:.1f}", "100%"])
    table = markdown_table(["part", "seconds", "share"], rows)
    used = timing.get("networks")
    if used:
        table += (
            f"\n\nPretrained networks: {used['trained']} trained, {used['reused']} read by another cell "
            "(one per (d, T, seed), shared by the studies)"
        )
    return table


def write_outputs(results, grid, out, profile=None):
    """Write results.json, one CSV per study (``recovery.csv``, ...), ``claims.csv``, the figures and
    report.md into ``out``.

    All or nothing: the files are written as a new set and published together only when every
    one was written (``store.output_set``), so a failure (a full disk, a stop) leaves the
    previous set whole, and a reader never sees files of two runs side by side.

    ``profile`` (``experiments.profile``) adds where the cells' time went.

    Returns
    -------
    list of dict
        The claims (see :func:`claims`).
    """
    rows = claims(results, grid)
    document = {"config": grid.to_dict(), **{name: results.get(name, []) for name in grid.studies}, "claims": rows}
    if profile is not None:
        document["profile"] = profile
    with store.output_set(out) as stage:
        stage("results.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
        for name in grid.studies:
            stage(f"{name}.csv").write_text(_csv(results.get(name, []), tuple(STUDIES[name].fields)), encoding="utf-8")
        stage("claims.csv").write_text(_csv(rows, ("claim", "measured", "threshold", "verdict")), encoding="utf-8")
        figures = _figures(results, grid, stage)
        stage("report.md").write_text(_report(results, grid, rows, figures, profile), encoding="utf-8")
    return rows
