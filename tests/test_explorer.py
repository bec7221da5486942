"""The Explorer app: figure builders and service methods as plain functions, the CLI entry, and
end-to-end runs in a headless Chromium (skipped when chromium or playwright is missing).

Env vars: ``ATOMARCH_SCREENSHOTS=1`` writes docs/screenshots/*.png; ``ATOMARCH_TIMINGS=path.json``
writes the browser timings (map first paint, click → structure, 10-frame interpolation).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from apps.explorer import figures
from apps.explorer.app import (
    create_app,
    describe_structure,
    download_payload,
    load_inputs,
    overlay_trace,
    picks_trace,
)
from apps.explorer.service import MAX_UPLOAD_ATOMS, ExplorerError


def _xyz_bytes(frames, fmt: str = "extxyz") -> bytes:
    import ase.io

    buf = io.StringIO()
    ase.io.write(buf, frames, format=fmt)
    return buf.getvalue().encode()


def _upload_contents(data: bytes) -> str:
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode()




@pytest.fixture(scope="module")
def app(explorer_files):
    ckpt, map_file = explorer_files
    model, table, ckpt_label, map_label = load_inputs(str(ckpt), str(map_file))
    return create_app(model, table, ckpt_label, map_label, timeout=120.0)


@pytest.fixture(scope="module")
def explorer(app):
    return app.explorer


# ------------------------------------------------------------------------------- figures
def test_map_figure_has_one_scattergl_per_split_and_overlay_slots(explorer):
    table = explorer.table
    fig = figures.map_figure(table, "gap")
    splits = figures.split_order(table)
    assert splits == ["train", "val", "test"]
    assert len(fig.data) == len(splits) + len(figures.OVERLAY_SLOTS)
    assert all(t.type == "scattergl" for t in fig.data)
    for k, split in enumerate(splits):
        n = int((table["split"] == split).sum())
        assert len(fig.data[k].x) == n and fig.data[k].name == f"{split} ({n})"
        assert fig.data[k].marker.symbol == figures.SPLIT_SYMBOLS[split]
        rows = figures.split_rows(table)[k]
        np.testing.assert_allclose(fig.data[k].marker.color, table["gap"].to_numpy(np.float32)[rows])
        assert "%{text}" in fig.data[k].hovertemplate and "gap" in fig.data[k].hovertemplate
    assert [t.name for t in fig.data[len(splits):]] == [name for _, name in figures.OVERLAY_SLOTS]
    assert all(len(t.x) == 0 for t in fig.data[len(splits):])
    assert figures.overlay_index(table, "picks") == len(fig.data) - 1


def test_color_options_and_error_column(explorer):
    table = explorer.table
    values = [o["value"] for o in figures.color_options(table)]
    assert values[:3] == ["gap", "pred_gap", "err_gap"] and "natoms" in values
    err = figures.color_values(table, "err_gap")
    np.testing.assert_allclose(err, table["pred_gap"] - table["gap"], atol=1e-5)
    lo, hi = figures.color_range(err, error=True)
    assert lo == -hi
    assert np.isnan(figures.color_values(table, "nonexistent")).all()


def test_map_figure_scales_to_all_of_qm9(explorer):
    """130,831 synthetic rows: the figure builds in seconds and serialises compactly (typed arrays)."""
    import plotly

    rng = np.random.default_rng(0)
    base = explorer.table
    n = 130_831
    big = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
    big["x"], big["y"] = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    big["split"] = rng.choice(["train", "val", "test"], n, p=[0.8, 0.1, 0.1])
    t0 = time.perf_counter()
    fig = figures.map_figure(big, "err_gap")
    payload = json.dumps(fig.to_plotly_json(), cls=plotly.utils.PlotlyJSONEncoder)
    elapsed = time.perf_counter() - t0
    assert sum(len(t.x) for t in fig.data[:3]) == n
    assert '"bdata"' in payload  # numeric arrays travel as base64 typed arrays
    assert len(payload) < 15e6, f"map payload {len(payload) / 1e6:.1f} MB"
    assert elapsed < 20, f"map figure took {elapsed:.1f} s"


def test_structure_figure_markers_and_bonds(explorer):
    atoms = explorer.atoms("row:0")
    fig = figures.structure_figure(atoms, "title")
    markers = [t for t in fig.data if t.name == "atoms"]
    assert len(markers) == 1 and len(markers[0].x) == len(atoms)
    assert list(markers[0].marker.color) == [figures.element_color(s) for s in atoms.get_chemical_symbols()]
    bonds = figures.bond_pairs(atoms)
    assert len(bonds) >= len(atoms) - 1  # a connected molecule
    segments = sum(len(t.x) // 3 for t in fig.data if t.name.startswith("bonds"))
    assert segments == len(bonds)
    assert fig.layout.uirevision == "structure" and fig.layout.scene.aspectmode == "cube"
    empty = figures.structure_figure(None, "nothing")
    assert len(empty.data) == 0


def test_path_and_points_overlays():
    xy = np.arange(20, dtype=np.float32).reshape(10, 2)
    refs = [f"path:t:{k}" for k in range(10)]
    valid = [True] * 9 + [False]
    trace = figures.path_overlay("path", xy, refs, [str(k) for k in range(10)], valid=valid)
    assert trace.type == "scattergl" and len(trace.x) == 10 and trace.mode == "lines+markers"
    assert list(trace.customdata) == refs and trace.marker.symbol[-1] == "circle-open"
    pts = figures.points_overlay("upload", xy[:3], refs[:3], ["a", "b", "c"])
    assert len(pts.x) == 3 and pts.name == "uploaded" and pts.showlegend
    assert len(overlay_trace("path", None).x) == 0


def test_grid_figure_one_scene_per_molecule(explorer):
    frames = [explorer.atoms(f"row:{k}") for k in range(5)]
    fig = figures.grid_figure(frames, [str(k) for k in range(5)], cols=3)
    scenes = {t.scene for t in fig.data}
    assert len(scenes) == 5
    assert sum(len(t.x) for t in fig.data if t.name == "atoms") == sum(len(a) for a in frames)


# ------------------------------------------------------------------------------- service
def test_click_reconstruction_and_labels(app, explorer):
    table = explorer.table
    rows = figures.split_rows(table)
    ref = explorer.ref_from_click({"points": [{"curveNumber": 1, "pointNumber": 2}]})
    assert ref == f"row:{rows[1][2]}" and table["split"].iat[rows[1][2]] == "val"
    assert explorer.ref_from_click({"points": [{"curveNumber": 5, "pointNumber": 0, "customdata": "path:x:1"}]}) == "path:x:1"
    assert explorer.ref_from_click(None) is None
    original, recon, text = describe_structure(explorer, ref)
    assert "heavy-atom RMSD" in text and "SMILES match" in text
    _, score = explorer.reconstruction(ref)
    assert set(score) == {"rmsd", "smiles", "smiles_recon", "match"}
    assert explorer.xy_of(ref) == pytest.approx((table["x"].iat[rows[1][2]], table["y"].iat[rows[1][2]]))
    # header names the checkpoint hash, config and map file
    layout = str(app.layout)
    assert "sha256" in layout and "config tiny_vae" in layout and "map.parquet" in layout


def test_interpolation_path_on_the_map(explorer):
    from atomarch.latent.paths import latent_path

    result = explorer.interpolate("row:0", "row:1", steps=7)
    assert len(result.frames) == 7 and result.xy.shape == (7, 2) and result.valid.shape == (7,)
    za, zb = explorer.model.encode([explorer.atoms("row:0"), explorer.atoms("row:1")])
    np.testing.assert_allclose(result.xy, explorer.model.project(latent_path(za, zb, 7, "slerp")), atol=1e-4)
    assert explorer.interpolate("row:0", "row:1", steps=7) is result  # cached
    assert len(overlay_trace("path", result.overlay()).x) == 7
    assert explorer.atoms(result.refs[3]) is result.frames[3]
    with pytest.raises(ExplorerError, match="between 2"):
        explorer.interpolate("row:0", "row:1", steps=1)
    with pytest.raises(ExplorerError, match="pick two points"):
        explorer.interpolate("row:0", None)


def test_sampling_places_samples(explorer):
    result = explorer.sample(4, seed=1)
    assert len(result.frames) == 4 and result.xy.shape == (4, 2)
    assert np.isfinite(result.xy).any()
    with pytest.raises(ExplorerError):
        explorer.sample(0)


def test_upload_valid_and_invalid_files(explorer):
    frames = [explorer.atoms("row:0"), explorer.atoms("row:1")]
    result = explorer.upload("two.extxyz", _upload_contents(_xyz_bytes(frames)))
    assert len(result.frames) == 2 and np.isfinite(result.xy).all()
    np.testing.assert_allclose(result.xy, explorer.model.project(explorer.model.encode(frames)), atol=1e-4)
    assert result.frames[0].info["source"] == "two.extxyz:0"
    cases = {
        "garbage.xyz": (b"this is not an xyz file\n", "cannot read garbage.xyz"),
        "mol.pdf": (b"%PDF", "unsupported file type"),
        "empty.xyz": (b"", "empty"),
        "huge.xyz": (b"0" * (3 * 1024 * 1024), "larger than 2 MB"),
        "silicon.xyz": (b"2\n\nSi 0 0 0\nSi 0 0 2.3\n", "not trained on"),
        "overlap.xyz": (b"2\n\nC 0 0 0\nC 0 0 0.01\n", "overlapping"),
        "big.xyz": (_xyz_bytes([__import__("ase").Atoms("C" * (MAX_UPLOAD_ATOMS + 1),
                                                        positions=np.arange(3 * (MAX_UPLOAD_ATOMS + 1)).reshape(-1, 3) * 1.5)]),
                    "limit is 500"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(ExplorerError, match=message):
            explorer.upload(name, _upload_contents(data))
    with pytest.raises(ExplorerError, match="base64"):
        explorer.upload("bad.xyz", "data:text/plain;base64,@@@")


def test_downloads_and_selection(explorer, tmp_path):
    import ase.io

    sel = explorer.refs_from_selection({"points": [{"curveNumber": 0, "pointNumber": k} for k in (0, 1, 1, 2)]})
    assert len(sel) == 3
    table = explorer.selection_table(sel)
    assert list(table["ref"]) == sel and {"smiles", "formula", "gap", "pred_gap"} <= set(table.columns)
    state = {"current": sel[0], "selection": sel}
    for what, fmt in (("current", "xyz"), ("current", "sdf"), ("recon", "extxyz"), ("selection", "extxyz")):
        payload = download_payload(explorer, what, fmt, state)
        data = base64.b64decode(payload["content"])
        path = tmp_path / payload["filename"]
        path.write_bytes(data)
        assert path.suffix == f".{fmt}"
        if fmt != "sdf":
            assert len(ase.io.read(path, ":")) == (3 if what == "selection" else 1)
        else:
            assert b"$$$$" in data
    csv = download_payload(explorer, "selection", "csv", state)
    assert pd.read_csv(io.StringIO(csv["content"]))["ref"].tolist() == sel
    with pytest.raises(ExplorerError, match="nothing to download"):
        download_payload(explorer, "path", "extxyz", {})


def test_optimisation_runs_in_background(explorer):
    job_id = explorer.start_optimization("row:2", "gap", "max", steps=20, decode_every=5)
    job = explorer.job(job_id)
    deadline = time.time() + 120
    while job.status == "running" and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "done", job.error
    result = job.result
    assert len(result.frames) == 5 and result.xy.shape == (5, 2) and "pred_gap" in result.values
    if explorer.has_xtb:
        assert "xtb_gap" in result.values
    with pytest.raises(ExplorerError, match="unknown property"):
        explorer.start_optimization("row:2", "homo", "max")


def test_picks_trace(explorer):
    trace = picks_trace(explorer, "row:0", None, "row:1")
    assert len(trace.x) == 2 and list(trace.text) == ["A", "start"]
    assert len(picks_trace(explorer, None, None, None).x) == 0


# ----------------------------------------------------------------------------------- CLI
def test_explore_cli_parser_and_missing_map(explorer_files, tmp_path, capsys, monkeypatch):
    import atomarch.latent.maps as maps
    from atomarch.cli import COMMANDS, build_parser

    whole_map = maps.build_map
    monkeypatch.setattr(maps, "build_map", lambda model, **kw: whole_map(model, **{**kw, "whole": False}))

    args = build_parser().parse_args(["explore"])
    assert (args.ckpt, args.map, args.host, args.port, args.debug) == (None, None, "127.0.0.1", 8050, False)
    assert "explore" in COMMANDS
    ckpt, _ = explorer_files
    model, table, ckpt_label, map_label = load_inputs(str(ckpt), str(tmp_path / "new_map.parquet"))
    assert (tmp_path / "new_map.parquet").is_file() and "built at start-up" in map_label
    assert "building it" in capsys.readouterr().err
    assert len(table) == 128 and "sha256" in ckpt_label


# ------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def page(app):
    from apps.explorer.browser import browser_page, missing_requirements, serve

    reason = missing_requirements()
    if reason:
        pytest.skip(f"browser tests need chromium and playwright: {reason} (`bash .ci/run` installs chromium; "
                    "`make test` does not)")
    with serve(app) as url, browser_page() as (pg, errors):
        pg.explorer_url = url
        pg.explorer_errors = errors
        pg.explorer_timings = {}
        yield pg
        path = os.environ.get("ATOMARCH_TIMINGS")
        if path and pg.explorer_timings:
            with open(path, "w") as fh:
                json.dump(pg.explorer_timings, fh, indent=2)


def _no_errors(page) -> None:
    assert not page.explorer_errors, page.explorer_errors


def test_browser_map_click_and_interpolation(page, explorer):
    """Page load, click → 3D structure, two picks → 10-frame interpolation (timed)."""
    from apps.explorer import browser

    timings = browser.measure(page, page.explorer_url, points=((0, 0), (0, 1), (1, 0)), steps=10)
    page.explorer_timings.update(timings)
    state = browser.graph_state(page, "map")
    assert state["canvas"] > 0
    assert state["lengths"][:3] == [len(r) for r in explorer.trace_rows]
    assert "sha256" in page.inner_text("#ckpt-label")
    assert browser.overlay_length(page, "interpolation") == 10
    browser.screenshot(page, "interpolation")
    browser.open_tab(page, "Structure")
    struct = browser.wait_for_structure(page)
    assert struct["canvas"] > 0 and "RMSD" in page.inner_text("#structure-info")
    browser.screenshot(page, "structure")
    _no_errors(page)


def test_browser_colour_and_selection(page, explorer):
    """Colour by the prediction error; a lasso/box selection fills the table."""
    from apps.explorer import browser

    before = page.evaluate("() => document.querySelector('#map .js-plotly-plot')._fullData[0].marker.cmin")
    page.click("#color-by")
    page.get_by_text("error gap (pred - true)", exact=True).click()
    page.wait_for_function("""(prev) => { const m = document.querySelector('#map .js-plotly-plot')._fullData[0].marker;
        return m.cmin !== prev && m.cmin === -m.cmax; }""", arg=before)
    n0 = len(explorer.trace_rows[0])
    page.evaluate(f"""() => document.querySelector('#map .js-plotly-plot').emit('plotly_selected',
        {{points: [0, 1, 2, 3, 4].map(k => ({{curveNumber: 0, pointNumber: k % {n0}, pointIndex: k % {n0}}}))}})""")
    page.wait_for_function("() => document.querySelector('#selection-info').innerText.startsWith('5 selected')")
    assert page.locator("#selection-table tbody tr").count() >= 5
    browser.screenshot(page, "map")
    _no_errors(page)


def test_browser_upload_places_a_point(page, explorer):
    from apps.explorer import browser

    data = _xyz_bytes([explorer.atoms("row:3")], fmt="xyz")
    before = max(browser.overlay_length(page, "uploaded"), 0)
    browser.upload(page, "my_molecule.xyz", data)
    page.wait_for_selector("#upload-ok")
    page.wait_for_function(f"""() => {{ const gd = document.querySelector('#map .js-plotly-plot');
        const t = gd._fullData.find(t => t.name === 'uploaded'); return t && t._length === {before + 1}; }}""")
    browser.screenshot(page, "upload")
    _no_errors(page)


def test_browser_malformed_upload_shows_error_and_app_keeps_working(page):
    from apps.explorer import browser

    browser.upload(page, "broken.xyz", b"3\nnot really\nC 0 0\n")
    page.wait_for_selector("#upload-message .error")
    assert "broken.xyz" in page.inner_text("#upload-message")
    browser.upload(page, "too_big.xyz", b"1\n\nC 0 0 0\n" + b" " * (2 * 1024 * 1024 + 10))
    page.wait_for_function("() => document.querySelector('#upload-message').innerText.includes('larger than 2 MB')")
    browser.open_tab(page, "Structure")
    title = browser.graph_state(page, "structure-original")["title"]
    browser.click_and_wait(page, 2, 1)  # the app still answers clicks
    browser.wait_for_structure(page, previous_title=title)
    _no_errors(page)


def test_browser_optimisation_and_sampling(page):
    from apps.explorer import browser

    if page.locator("#current-info").count() == 0:  # run on its own: load the page first
        page.goto(page.explorer_url)
        browser.wait_for_map(page)
    browser.click_and_wait(page, 0, 2)
    page.click("#set-start")
    browser.open_tab(page, "Optimisation")
    page.wait_for_function("() => document.querySelector('#opt-start-info').innerText.startsWith('start: ')"
                           " && !document.querySelector('#opt-start-info').innerText.includes('—')")
    page.fill("#opt-steps", "20")
    page.press("#opt-steps", "Enter")
    page.fill("#opt-every", "5")
    page.press("#opt-every", "Enter")
    page.click("#opt-run")
    page.wait_for_function("() => document.querySelector('#opt-status').innerText.startsWith('done')")
    assert page.evaluate("() => document.querySelectorAll('#opt-frames .frame-chip').length") == 5
    page.wait_for_function("() => document.querySelector('#map .js-plotly-plot')._fullData"
                           ".some(t => t.name === 'optimisation' && t._length === 5)")
    browser.screenshot(page, "optimisation")
    browser.open_tab(page, "Sampling")
    page.fill("#sample-n", "6")
    page.press("#sample-n", "Enter")
    page.click("#sample-run")
    page.wait_for_function("() => document.querySelector('#sample-message').innerText.startsWith('6 samples')")
    page.wait_for_function("""() => { const gd = document.querySelector('#sample-grid .js-plotly-plot');
        return gd && gd._fullData.filter(t => t.name === 'atoms').length === 6; }""")
    page.wait_for_function("() => document.querySelector('#map .js-plotly-plot')._fullData"
                           ".some(t => t.name === 'prior samples' && t._length === 6)")
    browser.screenshot(page, "sampling")
    _no_errors(page)
