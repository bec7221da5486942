"""Plot validation MAE against wall-clock training time for runs (reads Lightning's metrics.csv).

Usage: python benchmarks/learning_curves.py RUN_DIR [RUN_DIR ...] --property gap --out docs/learning_curve_gap.png
Prints the table of (epoch, hours, val MAE) for each run as well.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def load_curve(run: Path, prop: str, total_hours: float | None) -> pd.DataFrame:
    from atomarch.training import read_metrics

    m = read_metrics(run)
    col = f"val/mae_{prop}"
    if col not in m:
        raise SystemExit(f"{run}: no column {col} in metrics.csv")
    val = m[["epoch", "step", col]].dropna().copy()
    if "time_h" in m and m["time_h"].notna().any():
        val["hours"] = m["time_h"].dropna().to_numpy()[: len(val)]
    elif total_hours:  # estimate: the run's wall time spread uniformly over its steps
        val["hours"] = val["step"] / m["step"].max() * total_hours
    else:
        val["hours"] = float("nan")
    return val.rename(columns={col: "mae"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--property", default="gap")
    ap.add_argument("--unit", default="eV")
    ap.add_argument("--out", type=Path, default=Path("docs/learning_curve.png"))
    ap.add_argument("--total-hours", type=float, default=None,
                    help="for runs that did not log time_h: their wall-clock length, to put hours on the x axis")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in args.runs:
        curve = load_curve(run, args.property, args.total_hours)
        x = curve["hours"] if curve["hours"].notna().all() else curve["epoch"] + 1
        ax.plot(x, curve["mae"], marker="o", label=run.name)
        print(f"{run.name}")
        print(curve.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    ax.set_xlabel("training time (h)" if curve["hours"].notna().all() else "epoch")
    ax.set_ylabel(f"validation MAE {args.property} ({args.unit})")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
