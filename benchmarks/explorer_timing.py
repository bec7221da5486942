"""Explorer responsiveness in a headless Chromium: time to first paint of the map, click →
structure shown, and a 10-frame interpolation (button → frames and path shown); for a crystal
model, click → unit cell shown and click → reconstruction with its StructureMatcher verdict.

    python benchmarks/explorer_timing.py --ckpt checkpoints/qm9-vae --map checkpoints/qm9-vae/map.parquet
    python benchmarks/explorer_timing.py --ckpt CKPT --map MAP --synthetic 130831   # stress the map

``--synthetic N`` replaces the map by N rows resampled from it with random coordinates (to check
a QM9-sized map with a small model). Needs the system ``chromium`` and ``playwright``. Prints the
three times (seconds) and writes them as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "qm9-vae"))
    parser.add_argument("--map", default=None, help="map table (default: map.parquet beside the checkpoint)")
    parser.add_argument("--synthetic", type=int, default=0, help="resample the map to N rows with random x/y")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="fresh page loads (different points each time)")
    parser.add_argument("--out", default=None, help="JSON output")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import numpy as np

    from apps.explorer import browser
    from apps.explorer.app import create_app, load_inputs

    reason = browser.missing_requirements()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    model, table, ckpt_label, map_label = load_inputs(args.ckpt, args.map)
    if args.synthetic:
        rng = np.random.default_rng(0)
        table = table.iloc[rng.integers(0, len(table), args.synthetic)].reset_index(drop=True)
        table["x"] = (table["x"] + rng.normal(scale=table["x"].std(), size=len(table))).astype(np.float32)
        table["y"] = (table["y"] + rng.normal(scale=table["y"].std(), size=len(table))).astype(np.float32)
        map_label += f" (synthetic: {args.synthetic} resampled rows)"
    app = create_app(model, table, ckpt_label, map_label)
    sizes = [len(r) for r in app.explorer.trace_rows]
    results = []
    with browser.serve(app) as url, browser.browser_page() as (page, errors):
        for rep in range(args.repeats):
            k = 3 * rep
            points = ((0, k % sizes[0]), (0, (k + 1) % sizes[0]), (len(sizes) - 1, (k + 2) % sizes[-1]))
            if app.explorer.periodic:  # crystals: click -> unit cell, click -> reconstruction + verdict
                results.append(browser.measure_crystal(page, url, points[0]))
            else:
                results.append(browser.measure(page, url, points=points, steps=args.steps))
            print(json.dumps(results[-1]))
    summary = {key: float(np.median([r[key] for r in results])) for key in results[0]}
    summary.update(points=len(table), checkpoint=ckpt_label, map=map_label, console_errors=errors)
    print(f"map first paint        {summary['map_first_paint_s']:.2f} s ({len(table):,} points)")
    if "click_to_unit_cell_s" in summary:
        print(f"click -> unit cell     {summary['click_to_unit_cell_s']:.2f} s")
        print(f"click -> reconstruction + verdict {summary['click_to_reconstruction_s']:.2f} s")
    else:
        print(f"click -> structure drawn {summary['click_to_original_s']:.2f} s")
        print(f"click -> structure + reconstruction {summary['click_to_structure_s']:.2f} s")
        print(f"{args.steps}-frame interpolation {summary[f'interpolation_{args.steps}_frames_s']:.2f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
