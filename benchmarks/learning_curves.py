"""Plot validation MAE against wall-clock training time for runs (reads Lightning's metrics.csv).

Usage: python benchmarks/learning_curves.py RUN_DIR [RUN_DIR ...] --property gap --out docs/learning_curve_gap.png
Prints the table of (epoch, hours, val MAE) for each run as well.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def load_curve(run: Path, prop: str) -> pd.DataFrame:
    m = pd.read_csv(run / "logs" / "metrics.csv")
    col = f"val/mae_{prop}"
    if col not in m:
        raise SystemExit(f"{run}: no column {col} in metrics.csv")
    val = m[["epoch", "step", col]].dropna()
    if "time_h" in m:
        val["hours"] = m.loc[val.index, "time_h"]
    else:  # estimate from steps: the run's wall time is spread uniformly over its steps
        ckpt_time = (run / "train_seconds.txt")
        total_h = float(ckpt_time.read_text()) / 3600 if ckpt_time.is_file() else None
        val["hours"] = val["step"] / m["step"].max() * total_h if total_h else float("nan")
    return val.rename(columns={col: "mae"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--property", default="gap")
    ap.add_argument("--unit", default="eV")
    ap.add_argument("--out", type=Path, default=Path("docs/learning_curve.png"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in args.runs:
        curve = load_curve(run, args.property)
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
