"""Shared output of the learning-curve benchmarks (size_curves.py, transfer.py): one table row and
one plotted line per group (a model or a transfer mode), test MAE against training size."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_run_arguments(ap: argparse.ArgumentParser, runs: str, out: Path) -> None:
    """The options every learning-curve benchmark shares: test subset, seed, run folder
    (``~/.cache/atomarch-runs/<runs>``), output stem and config overrides."""
    ap.add_argument("--test-subset", type=int, default=None, help="only the first N test structures (quick checks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(Path.home() / ".cache" / "atomarch-runs" / runs))
    ap.add_argument("--out", default=str(out))
    ap.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. data.batch_size=64")


def write_curves(rows: list[dict[str, Any]], group: str, groups: list[str], sizes: list[str], out: Path,
                 title: str, y_label: str, x_label: str = "training structures", digits: int = 4) -> str:
    """Write ``<out>.txt`` (test MAE by group and size) and ``<out>.png`` (log-x curves), return
    the table. ``rows``: dicts with ``group`` (e.g. "model"), ``size`` (as in ``sizes``; "all"
    for the whole set), ``n_train`` (int) and ``test_mae``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_of = {r["size"]: r["n_train"] for r in rows}
    heads = [f"all ({n_of[s]})" if s == "all" and n_of.get(s) else s for s in sizes]
    width = max(9, *(len(h) + 1 for h in heads))
    lines = [title, f"{group:>10} " + " ".join(f"{h:>{width}}" for h in heads)]
    for g in groups:
        vals = {r["size"]: r["test_mae"] for r in rows if r[group] == g}
        lines.append(f"{g:>10} " + " ".join(f"{vals.get(s, float('nan')):{width}.{digits}f}" for s in sizes))
    table = "\n".join(lines)
    out.with_suffix(".txt").write_text(table + "\n")

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for g in groups:
        pts = sorted((r["n_train"], r["test_mae"]) for r in rows if r[group] == g and r.get("n_train"))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=g)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title.split(";")[0], fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    plt.close(fig)
    return table
