"""The Explorer on a crystal model: the tiny crystal VAE (``crystal_explorer_files``, symmetry
decoder, Perov-5 test copy) served by the same app as the molecule VAE.

(a) callbacks and service without a browser: the map's hover, the unit-cell view (12 cell edges,
periodic images, bonds), lattice / space-group panel, StructureMatcher verdict, interpolation
frame titles with crystal validity, CIF upload and download round trip, the library's
StructureError for a molecule given to a crystal model (and a crystal to a molecule model), the
checkpoint selector; (b) one headless-Chromium run (skipped without chromium/playwright) that
loads the crystal map, clicks a point and waits for the unit cell and the verdict, with timings.

Env var ``ATOMARCH_TIMINGS=path.json`` writes the browser timings.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk

from apps.explorer import figures
from apps.explorer.app import (
    CKPT_URL,
    ExplorerDispatcher,
    cell_panel,
    checkpoint_choices,
    create_app,
    describe_structure,
    download_payload,
    load_inputs,
    selector_options,
)
from apps.explorer.service import ExplorerError, FrameSet

ROOT = Path(__file__).resolve().parents[1]


def _cif_bytes(frames) -> bytes:
    import ase.io

    buf = io.BytesIO()
    ase.io.write(buf, frames, format="cif")
    return buf.getvalue()


def _contents(data: bytes) -> str:
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def app(crystal_explorer_files):
    ckpt, map_file = crystal_explorer_files
    model, table, ckpt_label, map_label = load_inputs(str(ckpt), str(map_file))
    return create_app(model, table, ckpt_label, map_label, timeout=120.0)


@pytest.fixture(scope="module")
def explorer(app):
    return app.explorer


@pytest.fixture(scope="module")
def client(app):
    return app.server.test_client()


def post(client, app, output: str, values: list, trigger: int = 0) -> dict:
    """POST a callback request as the page does (``values``: the callback's inputs then states);
    returns ``{"id.prop": value}`` of the response ({} when nothing was updated)."""
    key, cb = next((k, cb) for k, cb in app.callback_map.items() if k.lstrip(".").startswith(output))
    outs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in key.strip(".").split("...")]
    ins, states = cb["inputs"], cb["state"]
    assert len(values) == len(ins) + len(states)
    body = {"output": key, "outputs": outs if len(outs) > 1 else outs[0],
            "inputs": [dict(spec, value=v) for spec, v in zip(ins, values[: len(ins)])],
            "state": [dict(spec, value=v) for spec, v in zip(states, values[len(ins):])],
            "changedPropIds": [f"{ins[trigger]['id']}.{ins[trigger]['property']}"]}
    res = client.post("/_dash-update-component", json=body)
    assert res.status_code in (200, 204), res.status_code
    if res.status_code == 204:
        return {}
    return {f"{i}.{p}": v for i, props in res.get_json()["response"].items() for p, v in props.items()}


def _text(component) -> str:
    if isinstance(component, str):
        return component
    if isinstance(component, dict):
        return _text(component.get("props", {}).get("children", ""))
    if isinstance(component, list):
        return " ".join(_text(c) for c in component)
    return "" if component is None else str(component)


def _is_error(component) -> bool:
    return isinstance(component, dict) and component.get("props", {}).get("className") == "error"


def _edges(trace: dict) -> int:
    """Line segments of a serialised lines trace (pairs of points separated by None)."""
    x = trace["x"]
    if isinstance(x, dict):  # typed array: NaN separators
        x = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"])
    x = np.asarray([np.nan if v is None else v for v in x], dtype=float)
    return int(np.isfinite(x).sum() // 2)


# ------------------------------------------------------------------------------- figures
def test_crystal_map_hover_names_material_and_formula(explorer):
    table = explorer.table
    assert explorer.periodic and figures.is_crystal_table(table) and explorer.download_formats == ("cif", "extxyz")
    fig = figures.map_figure(table, "heat_ref")
    splits = figures.split_order(table)
    assert all(t.type == "scattergl" for t in fig.data) and len(fig.data) == len(splits) + len(figures.OVERLAY_SLOTS)
    for k, rows in enumerate(figures.split_rows(table)):
        want = [f"{m}  {f}" for m, f in zip(table["material_id"].iloc[rows], table["formula"].iloc[rows])]
        assert list(fig.data[k].text) == want
        assert "heat_ref" in fig.data[k].hovertemplate
        np.testing.assert_allclose(fig.data[k].marker.color, table["heat_ref"].to_numpy(np.float32)[rows])
    with_sg = table.assign(space_group="Pm-3m")
    text = figures.map_figure(with_sg, "heat_ref").data[0].text[0]
    assert text.endswith("SG Pm-3m") and text.startswith(str(table["material_id"].iloc[figures.split_rows(table)[0][0]]))
    assert [o["value"] for o in figures.color_options(table)][:3] == ["heat_ref", "pred_heat_ref", "err_heat_ref"]


def test_unit_cell_view_of_rock_salt():
    """MgO (conventional cubic cell, 8 atoms): the classic 27-atom picture — corners, face and
    edge centres drawn with their periodic images — 54 Mg-O bonds inside the cell and 54 half
    bonds leaving it, no Mg-Mg bonds, one legend entry per element."""
    mgo = bulk("MgO", "rocksalt", a=4.21, cubic=True)
    fig = figures.structure_figure(mgo, "MgO")  # dispatches to crystal_figure
    names = [t.name for t in fig.data]
    assert names == ["cell", "bonds", "Mg", "O"]
    cell = fig.data[0]
    assert _edges(cell.to_plotly_json()) == 12
    pts = np.array([cell.x, cell.y, cell.z], dtype=float).T.reshape(12, 3, 3)[:, :2]
    lengths = np.linalg.norm(pts[:, 1] - pts[:, 0], axis=1)
    np.testing.assert_allclose(sorted(lengths), [4.21] * 12, atol=1e-9)
    atoms = [t for t in fig.data if t.mode == "markers"]
    assert [len(t.x) for t in atoms] == [14, 13] and all(t.showlegend for t in atoms)  # Mg: 8 corners + 6 faces
    assert atoms[0].marker.color == figures.element_color_any("Mg") != figures.DEFAULT_COLOR
    index, offset, frac = figures.periodic_images(mgo)
    assert len(index) == 27 and frac.min() > -1e-9 and frac.max() < 1 + 1e-9
    full, half = figures.crystal_bonds(mgo, index, offset)
    assert len(full) == 54 and len(half) == 54
    symbols = np.array(mgo.get_chemical_symbols())[index]
    assert all({symbols[p], symbols[q]} == {"Mg", "O"} for p, q in full)
    assert _edges(fig.data[1].to_plotly_json()) == 108
    # an atom just inside a face is drawn on the opposite face too (within FACE_TOLERANCE Å)
    shifted = Atoms("Cu", scaled_positions=[[0.999, 0.5, 0.5]], cell=np.eye(3) * 3.0, pbc=True)
    assert len(figures.periodic_images(shifted)[0]) == 2
    assert len(figures.periodic_images(shifted, tol=0.001)[0]) == 1


def test_lattice_summary_and_panel():
    info = figures.crystal_summary(bulk("MgO", "rocksalt", a=4.21, cubic=True))
    assert (info["space_group"], info["space_group_number"], info["formula"], info["natoms"]) == ("Fm-3m", 225, "MgO", 8)
    assert info["a"] == pytest.approx(4.21) and info["gamma"] == pytest.approx(90.0) and info["volume"] == pytest.approx(4.21**3)
    prim = figures.crystal_summary(bulk("Si", "diamond", a=5.43))
    assert prim["space_group"] == "Fd-3m" and prim["alpha"] == pytest.approx(60.0)
    text = _text(json.loads(json.dumps(cell_panel(bulk("MgO", "rocksalt", a=4.21, cubic=True)).to_plotly_json(),
                                       default=lambda o: o.to_plotly_json())))
    for part in ("space group", "Fm-3m (225)", "a, b, c", "4.210, 4.210, 4.210 Å", "α, β, γ", "90.00, 90.00, 90.00°", "MgO"):
        assert part in text, (part, text)


# ------------------------------------------------------------------ callbacks and service
def test_click_shows_unit_cell_lattice_and_match_verdict(app, client, explorer):
    from atomarch.metrics.crystals import structure_match

    ref = explorer.ref_from_click({"points": [{"curveNumber": 0, "pointNumber": 1}]})
    out = post(client, app, "structure-original.figure", [ref])
    assert "structure-recon.figure" not in out  # the cell shows without waiting for the decoder
    out.update(post(client, app, "structure-recon.figure", [ref]))
    original = out["structure-original.figure"]
    cell = next(t for t in original["data"] if t.get("name") == "cell")
    assert _edges(cell) == 12
    atoms = explorer.atoms(ref)
    assert "material_id" in atoms.info and "smiles" not in atoms.info
    elements = [t["name"] for t in original["data"] if t.get("mode") == "markers"]
    assert sorted(elements) == sorted(set(atoms.get_chemical_symbols()))
    assert atoms.info["material_id"] in original["layout"]["title"]["text"]
    recon_fig = out["structure-recon.figure"]
    assert any(t.get("name") == "cell" for t in recon_fig["data"]) or not recon_fig["data"]
    info = _text(out["structure-info.children"])
    recon, score = explorer.reconstruction(ref)
    match, rms = structure_match(atoms, recon)
    assert score["match"] == match and (score["rms"] is None) == (rms is None)
    assert f"StructureMatcher match: {'yes' if match else 'no'}" in info and "RMS" in info
    assert "structure valid" in info and "composition valid" in info and "SMILES" not in info
    summary = figures.crystal_summary(atoms)
    cell_text = _text(out["structure-original-cell.children"])
    assert "space group" in cell_text and f"{summary['a']:.3f}" in cell_text and "α, β, γ" in cell_text
    assert (summary["space_group"] or "n/a") in cell_text
    assert "a, b, c" in _text(out["structure-recon-cell.children"]) or len(recon) == 0
    assert out["current-info.children"].startswith(f"clicked: {atoms.info['material_id']} · ")
    _, _, text = describe_structure(explorer, ref)
    assert text == out["structure-info.children"]["props"]["children"]
    # a hostile reference is still an in-page error, the cell panels untouched
    out = post(client, app, "structure-recon.figure", ["row:abc"])
    assert _is_error(out["structure-info.children"]) and "structure-recon-cell.children" not in out
    assert "structure-original-cell.children" not in post(client, app, "structure-original.figure", ["row:abc"])


def test_interpolation_frame_titles_carry_crystal_validity(app, client, explorer):
    from atomarch.metrics.crystals import composition_valid, structure_valid

    out = post(client, app, "ov-path.data", [1, "row:0", "row:3", 4, "slerp"])
    data = out["ov-path.data"]
    assert len(data["refs"]) == 4 and out["interp-message.children"].startswith("4 frames")
    for k, ref in enumerate(data["refs"]):
        frame = explorer.atoms(ref)
        s_ok, c_ok = bool(structure_valid(frame)), bool(composition_valid(frame))
        want = f"structure valid {'✓' if s_ok else '✗'} · composition valid {'✓' if c_ok else '✗'}"
        view = post(client, app, "interp-structure.figure", [k, data])
        title = view["interp-structure.figure"]["layout"]["title"]["text"]
        assert title == f"frame {k} · {want}", title
        assert want in data["labels"][k] and data["valid"][k] == (s_ok and c_ok)
        assert any(t.get("name") == "cell" for t in view["interp-structure.figure"]["data"]) or len(frame) == 0


def test_optimisation_and_sampling_on_a_crystal_model(explorer):
    job = explorer.job(explorer.start_optimization("row:2", "heat_ref", "min", steps=4, decode_every=2))
    deadline = time.time() + 120
    while job.status == "running" and time.time() < deadline:
        time.sleep(0.1)
    assert job.status == "done", job.error
    result = job.result
    assert len(result.frames) == 3 and set(result.values) == {"pred_heat_ref", "structure_valid", "composition_valid"}
    np.testing.assert_array_equal(result.valid, (result.values["structure_valid"] > 0) & (result.values["composition_valid"] > 0))
    assert all("composition valid" in label and "step" in label for label in result.labels)
    assert not explorer.has_xtb
    samples = explorer.sample(3, seed=2)
    assert all(a.pbc.all() for a in samples.frames if len(a)) and "structure_valid" in samples.values


def test_cif_upload_and_download_round_trip(app, client, explorer, tmp_path):
    import ase.io

    from atomarch.metrics.crystals import structure_match

    frames = [explorer.atoms("row:4"), bulk("MgO", "rocksalt", a=4.21)]
    out = post(client, app, "ov-upload.data", [_contents(_cif_bytes(frames)), "two.cif", None])
    data = out["ov-upload.data"]
    assert "2 structure(s) placed" in _text(out["upload-message.children"]) and len(data["refs"]) == 2
    uploaded = [explorer.atoms(r) for r in data["refs"]]
    np.testing.assert_allclose(np.array(data["xy"], float), explorer.model.project(explorer.model.encode(uploaded)), atol=1e-4)
    assert all("composition valid" in label for label in data["labels"])
    payload = download_payload(explorer, "selection", "cif", {"selection": data["refs"]})
    path = tmp_path / payload["filename"]
    path.write_bytes(base64.b64decode(payload["content"]))
    back = ase.io.read(path, ":")
    assert len(back) == 2 and path.suffix == ".cif"
    for a, b in zip(frames, back):
        assert a.get_chemical_formula() == b.get_chemical_formula()
        np.testing.assert_allclose(a.cell.cellpar(), b.cell.cellpar(), atol=1e-4)
        assert structure_match(a, b)[0]
    # extxyz keeps the cell too; sdf is not a crystal format
    ext = base64.b64decode(download_payload(explorer, "current", "extxyz", {"current": data["refs"][1]})["content"])
    assert b"Lattice=" in ext
    with pytest.raises(ExplorerError, match="download format must be one of cif, extxyz"):
        explorer.structures_file(data["refs"], "sdf")
    # frames without atoms are left out of a CIF
    token = "emptytest1"
    explorer._register(FrameSet("sample", token, [Atoms(pbc=True), frames[1]], np.zeros((2, 2)), np.ones(2, bool), ["", ""]))
    cif = explorer.structures_file([f"sample:{token}:0", f"sample:{token}:1"], "cif")
    assert cif.count(b"data_") == 1


def test_molecule_upload_to_crystal_model_is_refused_in_page(app, client):
    import ase.io

    buf = io.StringIO()
    ase.io.write(buf, Atoms("TiO2", positions=[[0, 0, 0], [1.8, 0, 0], [-1.8, 0, 0]]), format="xyz")
    out = post(client, app, "ov-upload.data", [_contents(buf.getvalue().encode()), "molecule.xyz", None])
    assert "ov-upload.data" not in out
    msg = out["upload-message.children"]
    assert _is_error(msg)
    assert "molecule.xyz:0" in _text(msg) and "not periodic on all three axes" in _text(msg)
    assert "crystal model" in _text(msg)


def test_crystal_upload_to_molecule_model_is_refused():
    """The shipped QM9 VAE refuses a CIF with the library's StructureError message."""
    from apps.explorer.service import Explorer

    folder = ROOT / "checkpoints" / "qm9-vae"
    if not (folder / "model.ckpt").is_file() or not (folder / "map.parquet").is_file():
        pytest.skip("no shipped checkpoints/qm9-vae")
    import atomarch

    model = atomarch.load_model(folder)
    table = pd.read_parquet(folder / "map.parquet").head(50)
    explorer = Explorer(model, table)
    assert not explorer.periodic and explorer.download_formats == ("xyz", "extxyz", "sdf")
    with pytest.raises(ExplorerError, match=r"diamond.cif:0\) is periodic \(a crystal with a cell\), but this is a molecule model"):
        explorer.upload("diamond.cif", _contents(_cif_bytes([bulk("C", "diamond", a=3.567)])))


def test_checkpoint_selector_serves_each_checkpoint_under_its_url(crystal_explorer_files, tmp_path):
    from werkzeug.test import Client

    ckpt, _ = crystal_explorer_files
    root = tmp_path / "checkpoints"
    for name in ("perov-a", "perov-b"):
        shutil.copytree(ckpt.parent, root / name)
    (root / "no-map").mkdir()
    shutil.copy(ckpt, root / "no-map" / "model.ckpt")
    (root / "broken").mkdir()
    (root / "broken" / "model.ckpt").write_bytes(b"not a checkpoint")
    (root / "broken" / "map.parquet").write_bytes(b"")
    choices = checkpoint_choices(root)
    assert list(choices) == ["broken", "perov-a", "perov-b"]
    options = selector_options(choices, "perov-a")
    assert options == [{"label": "broken", "value": "/ckpt/broken/"}, {"label": "perov-a", "value": "/"},
                       {"label": "perov-b", "value": "/ckpt/perov-b/"}]
    model, table, ckpt_label, map_label = load_inputs(str(root / "perov-a"), None)
    default = create_app(model, table, ckpt_label, map_label, selector={"options": options, "value": "/"})
    dispatcher = ExplorerDispatcher(default, "perov-a", choices)
    client = Client(dispatcher)
    layout = json.dumps(json.loads(client.get("/_dash-layout").get_data(as_text=True)))
    assert "ckpt-select" in layout and "perov-a" in layout and '"value": "/ckpt/perov-b/"' in layout
    page = client.get(CKPT_URL.format("perov-b"))
    assert page.status_code == 200 and "/ckpt/perov-b/_dash-component-suites/" in page.get_data(as_text=True)
    layout_b = json.loads(client.get("/ckpt/perov-b/_dash-layout").get_data(as_text=True))
    assert "perov-b" in json.dumps(layout_b) and '"value": "/ckpt/perov-b/"' in json.dumps(layout_b)
    assert dispatcher.apps["perov-b"].explorer.periodic
    # the selector navigates; a forged URL does not
    b = dispatcher.apps["perov-b"]
    key = next(k for k in b.callback_map if k.startswith("nav.href"))
    body = {"output": key, "outputs": {"id": "nav", "property": "href"},
            "inputs": [{"id": "ckpt-select", "property": "value", "value": "/"}], "changedPropIds": ["ckpt-select.value"]}
    res = client.post("/ckpt/perov-b/_dash-update-component", json=body)
    assert res.status_code == 200 and res.get_json()["response"]["nav"]["href"] == "/"
    body["inputs"][0]["value"] = "https://example.org/"
    assert client.post("/ckpt/perov-b/_dash-update-component", json=body).status_code == 204
    # unknown names, the default's own name and a broken checkpoint
    assert client.get("/ckpt/nope/").status_code == 404
    assert client.get("/ckpt/perov-a/").status_code == 302
    broken = client.get("/ckpt/broken/")
    assert broken.status_code == 500 and "cannot open checkpoint broken" in broken.get_data(as_text=True)
    assert client.get("/_dash-layout").status_code == 200  # the server goes on


# ------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def page(app):
    from apps.explorer.browser import browser_page, missing_requirements, serve

    reason = missing_requirements()
    if reason:
        pytest.skip(f"browser tests need chromium and playwright: {reason} (`bash .ci/run` installs chromium)")
    with serve(app) as url, browser_page() as (pg, errors):
        pg.explorer_url = url
        pg.explorer_errors = errors
        yield pg


def test_browser_crystal_map_click_shows_unit_cell_and_verdict(page, explorer):
    """Load the crystal map, click a point: its unit cell (12 edges, atoms by element), the
    lattice table and the StructureMatcher verdict appear; first paint and click → unit cell
    timed (cold: the first reconstruction of the session), then a second click (warm)."""
    from apps.explorer import browser

    timings = browser.measure_crystal(page, page.explorer_url, (0, 0))
    state = browser.wait_for_unit_cell(page)
    assert state["edges"] == 12 and state["canvas"] > 0
    atoms = explorer.atoms(f"row:{explorer.trace_rows[0][0]}")
    assert sorted(state["elements"]) == sorted(set(atoms.get_chemical_symbols()))
    assert browser.graph_state(page, "map")["lengths"][: len(explorer.trace_rows)] == [len(r) for r in explorer.trace_rows]
    assert "StructureMatcher match:" in page.inner_text("#structure-info")
    cell_text = page.inner_text("#structure-original-cell")
    assert "space group" in cell_text and "α, β, γ" in cell_text
    browser.screenshot(page, "crystal")
    t0 = time.perf_counter()
    browser.click_map_point(page, 0, 1)
    browser.wait_for_unit_cell(page, previous_title=state["title"])
    timings["click_to_unit_cell_warm_s"] = round(time.perf_counter() - t0, 3)
    print(f"\ncrystal explorer timings (tiny crystal VAE, {len(explorer.table)} points): {timings}")
    path = os.environ.get("ATOMARCH_TIMINGS")
    if path:
        with open(path, "w") as fh:
            json.dump(timings, fh, indent=2)
    assert not page.explorer_errors, page.explorer_errors


def test_browser_unit_cell_shows_while_the_reconstruction_runs(page, explorer, monkeypatch):
    """A click draws the crystal's unit cell and lattice table without waiting for the decoder:
    while the reconstruction is held back, the cell is on screen and the panel says it is
    reconstructing; once released, the verdict replaces the message."""
    import threading

    from apps.explorer import browser

    release = threading.Event()
    real = explorer.reconstruction

    def held(ref):
        release.wait(60)
        return real(ref)

    monkeypatch.setattr(explorer, "reconstruction", held)
    page.goto(page.explorer_url)
    browser.wait_for_map(page)
    try:
        browser.click_map_point(page, 0, 2)
        browser.wait_for_original(page, crystal=True)
        assert "reconstructing" in page.inner_text("#structure-status")
        assert "StructureMatcher" not in page.inner_text("#structure-info")
    finally:
        release.set()
    assert browser.wait_for_unit_cell(page)["edges"] == 12
    assert page.inner_text("#structure-status") == "" and "StructureMatcher match:" in page.inner_text("#structure-info")
    assert not page.explorer_errors, page.explorer_errors


@pytest.mark.slow
def test_browser_checkpoint_selector_switches_model(page, crystal_explorer_files, tmp_path):
    """Two checkpoint folders: choosing the other one in the header's selector loads its page
    (its own model and map) and a click there shows a unit cell."""
    from apps.explorer import browser

    ckpt, _ = crystal_explorer_files
    root = tmp_path / "checkpoints"
    for name in ("perov-a", "perov-b"):
        shutil.copytree(ckpt.parent, root / name)
    choices = checkpoint_choices(root)
    options = selector_options(choices, "perov-a")
    model, table, ckpt_label, map_label = load_inputs(str(root / "perov-a"), None)
    default = create_app(model, table, ckpt_label, map_label, selector={"options": options, "value": "/"})
    with browser.serve(ExplorerDispatcher(default, "perov-a", choices)) as url:
        page.goto(url)
        browser.wait_for_map(page)
        assert "perov-a" in page.inner_text("#ckpt-label")
        page.click("#ckpt-select")
        page.get_by_text("perov-b", exact=True).click()
        page.wait_for_url(url + "ckpt/perov-b/")
        browser.wait_for_map(page)
        assert "perov-b" in page.inner_text("#ckpt-label")
        browser.click_map_point(page, 0, 0)
        assert browser.wait_for_unit_cell(page)["edges"] == 12
    assert not page.explorer_errors, page.explorer_errors
