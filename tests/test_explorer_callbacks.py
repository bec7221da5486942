"""The Explorer's callbacks without a browser: every callback answered over Dash's HTTP route
(Flask test client), hostile inputs, every service error branch, and the values behind the
structure, sampling and optimisation panels (compared with the model's own API).

Runs in CI without Chromium; the browser tests in ``test_explorer.py`` cover the page itself.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from apps.explorer.app import (
    MAX_MESSAGE_CHARS,
    create_app,
    describe_structure,
    download_payload,
    load_inputs,
    overlay_data,
    overlay_trace,
)
from apps.explorer.service import MAX_SAMPLES, MAX_STEPS, ExplorerError, as_int, parse_ref, shown

HOSTILE_REFS = ["row:abc", "row:12;x", "row:-1", "row:", "nope", "path:abc:x", "row:1" + "0" * 100_000, "x" * 100_000,
                "path:" + "a" * 100_000 + ":1", 12, ["row:1"], {"a": 1}]
UNKNOWN_REFS = ["row:999999999", "sample:zz:0", "traj:0123456789:0"]  # well formed, naming nothing


@pytest.fixture(scope="module")
def app(explorer_files):
    ckpt, table_path = explorer_files
    model, table, ckpt_label, map_label = load_inputs(str(ckpt), str(table_path))
    return create_app(model, table, ckpt_label, map_label, timeout=120.0)


@pytest.fixture(scope="module")
def explorer(app):
    return app.explorer


@pytest.fixture(scope="module")
def client(app):
    return app.server.test_client()


def _callback(app, output: str) -> tuple[str, dict]:
    """The callback whose output list starts with ``output`` (``"id.prop"``)."""
    for key, cb in app.callback_map.items():
        if key.lstrip(".").startswith(output):
            return key, cb
    raise KeyError(output)


def post(client, app, output: str, values: list, trigger: int = 0) -> tuple[int, dict]:
    """POST a callback request as the page does: ``values`` are the callback's inputs then its
    states, in order; ``trigger`` is the index of the input that changed. Returns (status,
    ``{"id.prop": value}`` of the response, {} when nothing was updated)."""
    key, cb = _callback(app, output)
    outs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in key.strip(".").split("...")]
    ins, states = cb["inputs"], cb["state"]
    assert len(values) == len(ins) + len(states), (output, len(ins), len(states))
    inputs = [dict(spec, value=v) for spec, v in zip(ins, values[: len(ins)])]
    state = [dict(spec, value=v) for spec, v in zip(states, values[len(ins):])]
    changed = ins[trigger]
    cid = changed["id"] if isinstance(changed["id"], str) else json.dumps(changed["id"], separators=(",", ":"), sort_keys=True)
    body = {"output": key, "outputs": outs if len(outs) > 1 else outs[0], "inputs": inputs, "state": state,
            "changedPropIds": [f"{cid}.{changed['property']}"]}
    res = client.post("/_dash-update-component", json=body)
    if res.status_code != 200:
        return res.status_code, {}
    data = res.get_json()["response"]
    return 200, {f"{i}.{p}": v for i, props in data.items() for p, v in props.items()}


def _text(component) -> str:
    """All text of a serialised Dash component (or a plain string)."""
    if isinstance(component, str):
        return component
    if isinstance(component, dict):
        return _text(component.get("props", {}).get("children", ""))
    if isinstance(component, list):
        return " ".join(_text(c) for c in component)
    return "" if component is None else str(component)


def _is_error(component) -> bool:
    return isinstance(component, dict) and component.get("props", {}).get("className") == "error"


def _assert_short_error(component, bad=None) -> str:
    assert _is_error(component), component
    text = _text(component)
    assert 0 < len(text) <= MAX_MESSAGE_CHARS, len(text)
    if isinstance(bad, str) and len(bad) > 200:
        assert bad[:200] not in text  # a long bad value is not echoed whole
    return text


# ------------------------------------------------------------------------ validation helpers
def test_reference_parsing_and_short_echo():
    assert parse_ref("row:12") == ("row", "", 12)
    assert parse_ref("path:3f2a9c01bb:4") == ("path", "3f2a9c01bb", 4)
    for bad in HOSTILE_REFS:
        with pytest.raises(ExplorerError, match="not a structure reference") as info:
            parse_ref(bad)
        assert len(str(info.value)) < 200
    assert len(shown("x" * 100_000)) < 50 and shown("abc") == "'abc'"
    assert as_int(3.0, "n", 1, 5) == 3 and as_int("4", "n", 1, 5) == 4
    for bad in ("abc", 2.5, True, None, float("nan"), 0, 6, "9" * 5000, [3]):
        with pytest.raises(ExplorerError, match="n must be a whole number between 1 and 5"):
            as_int(bad, "n", 1, 5)


def test_service_rejects_every_bad_reference(explorer):
    n = len(explorer.table)
    for bad in HOSTILE_REFS + UNKNOWN_REFS + [f"row:{n}"]:
        for call in (explorer.atoms, explorer.label, explorer.reconstruction):
            with pytest.raises(ExplorerError) as info:
                call(bad)
            assert len(str(info.value)) < 200, str(info.value)[:300]
        assert explorer.xy_of(bad) is None
        with pytest.raises(ExplorerError):
            explorer.interpolate(bad, "row:0", steps=3)
        with pytest.raises(ExplorerError):
            explorer.start_optimization(bad, "gap", "max", steps=2, decode_every=1)
        with pytest.raises(ExplorerError):
            explorer.structures_file([bad], "xyz")
    with pytest.raises(ExplorerError, match="no map row 999999999"):
        explorer.atoms("row:999999999")
    # a result reference must name a result of its own kind
    sample = explorer.sample(2, seed=3)
    assert explorer.atoms(sample.refs[1]) is sample.frames[1]
    with pytest.raises(ExplorerError, match="no longer available"):
        explorer.atoms(sample.refs[1].replace("sample:", "path:"))
    with pytest.raises(ExplorerError, match="no longer available"):
        explorer.atoms(sample.refs[1][:-1] + "7")


def test_service_error_branches(explorer):
    cases = [
        (lambda: explorer.interpolate("row:0", "row:1", steps="abc"), "steps must be a whole number between 2"),
        (lambda: explorer.interpolate("row:0", "row:1", steps=MAX_STEPS + 1), f"between 2 and {MAX_STEPS}"),
        (lambda: explorer.interpolate("row:0", "row:1", steps=2.5), "whole number"),
        (lambda: explorer.interpolate("row:0", "row:1", steps=4, method="cubic"), "slerp, linear"),
        (lambda: explorer.interpolate("row:0", "", steps=4), "pick two points"),
        (lambda: explorer.sample("abc"), "number of samples"),
        (lambda: explorer.sample(MAX_SAMPLES + 1), f"between 1 and {MAX_SAMPLES}"),
        (lambda: explorer.sample(2, seed=-1), "seed must be a whole number"),
        (lambda: explorer.sample(2, seed="x" * 10_000), "seed must be a whole number"),
        (lambda: explorer.upload("a.xyz", None), "base64 data URL"),
        (lambda: explorer.upload(["a.xyz"], "data:,"), "base64 data URL"),
        (lambda: explorer.upload("a" * 5000 + ".pdf", "data:,"), "unsupported file type"),
        (lambda: explorer.start_optimization("", "gap"), "pick a start point"),
        (lambda: explorer.start_optimization("row:0", "homo"), "unknown property 'homo'"),
        (lambda: explorer.start_optimization("row:0", ["gap"]), "unknown property"),
        (lambda: explorer.start_optimization("row:0", "gap", "up"), "direction must be one of max, min"),
        (lambda: explorer.start_optimization("row:0", "gap", "max", steps=0), "steps must be"),
        (lambda: explorer.start_optimization("row:0", "gap", "max", steps="1e9"), "steps must be"),
        (lambda: explorer.start_optimization("row:0", "gap", "max", steps=5, decode_every="x"), "'decode every'"),
        (lambda: explorer.job("nope"), "unknown optimisation job 'nope'"),
        (lambda: explorer.job(["x"]), "unknown optimisation job"),
        (lambda: explorer.structures_file(["row:0"], "pdb"), "download format must be one of"),
        (lambda: explorer.structures_file("row:0", "xyz"), "list of structure references"),
        (lambda: explorer.selection_table("row:0"), "list of structure references"),
        (lambda: download_payload(explorer, "everything", "xyz", {}), "the download must be one of"),
        (lambda: download_payload(explorer, "current", "xyz", {}), "click a point"),
        (lambda: download_payload(explorer, "current", "xyz", {"current": "row:abc"}), "not a structure reference"),
        (lambda: download_payload(explorer, "path", "xyz", {"path": {"refs": "row:0"}}), "nothing to download"),
        (lambda: download_payload(explorer, "selection", "csv", {"selection": "row:0"}), "list of structure references"),
        (lambda: download_payload(explorer, "selection", "csv", {}), "select points"),
        (lambda: download_payload(explorer, "current", "xyz", "state"), "bad page state"),
    ]
    for call, message in cases:
        with pytest.raises(ExplorerError, match=message):
            call()
    frames = explorer.sample(3, seed=4)
    path = {"refs": frames.refs, "labels": frames.labels, "valid": frames.valid.tolist(),
            "xy": frames.overlay()["xy"]}
    with pytest.raises(ExplorerError, match="the frame must be"):
        download_payload(explorer, "path-frame", "xyz", {"path": path, "path_k": "abc"})
    # malformed clicks, selections and overlay summaries are ignored, not errors
    for click in (None, {}, {"points": "x"}, {"points": [None]}, {"points": [{"curveNumber": "abc"}]},
                  {"points": [{"curveNumber": 0, "pointNumber": 10**8}]},
                  {"points": [{"curveNumber": 99, "customdata": "row:abc"}]}, "junk"):
        assert explorer.ref_from_click(click) is None
    assert explorer.refs_from_selection({"points": [{"curveNumber": 0, "pointNumber": 0}, "x", {"customdata": 5}]}) == \
        [explorer.ref_from_click({"points": [{"curveNumber": 0, "pointNumber": 0}]})]
    assert list(explorer.selection_table(["row:abc", "row:0", 7])["ref"]) == ["row:0"]
    for data in ("x", {"refs": "a"}, {"refs": ["row:0"], "labels": [], "valid": [], "xy": []},
                 {"refs": ["row:0"], "labels": ["a"], "valid": [True], "xy": [["a", 1]]}):
        assert overlay_data(data) is None
        assert len(overlay_trace("path", data).x) == 0


# ---------------------------------------------------------------- callbacks over HTTP
def test_structure_callback_answers_hostile_refs_in_page(app, client, explorer):
    """The click's two callbacks (the structure at once, its reconstruction after) both answer
    a bad reference in the page: the reconstruction's panel carries the error."""
    status, out = post(client, app, "structure-original.figure", ["row:0"])
    assert status == 200 and out["structure-original.figure"]["data"] and out["current-info.children"].startswith("clicked")
    status, out = post(client, app, "structure-recon.figure", ["row:0"])
    assert status == 200 and "structure-recon.figure" in out and not _is_error(out["structure-info.children"])
    for bad in HOSTILE_REFS + UNKNOWN_REFS + [f"row:{len(explorer.table)}"]:
        status, out = post(client, app, "structure-original.figure", [bad])
        assert status == 200, (shown(bad), status)
        assert "structure-original.figure" not in out  # the figures are left as they were
        assert out["current-info.children"] == "no point clicked"
        status, out = post(client, app, "structure-recon.figure", [bad])
        assert status == 200, (shown(bad), status)
        _assert_short_error(out["structure-info.children"], bad)
        assert "structure-recon.figure" not in out


def test_every_callback_survives_hostile_input(app, client, explorer):
    big = "x" * 100_000
    bad_overlay = {"refs": [big], "labels": "?", "valid": 1, "xy": None}
    # (output, values, trigger index, output holding the in-page error or None)
    cases = [
        ("map.figure", [["gap"], bad_overlay, bad_overlay, bad_overlay, bad_overlay, big, "row:-1", 12], 0, None),
        ("map.figure", ["gap", bad_overlay, bad_overlay, bad_overlay, bad_overlay, big, "row:-1", 12], 5, None),
        ("current-ref.data", [{"points": [{"curveNumber": big}]}], 0, None),
        ("pick-a.data", [1, big], 0, None),
        ("pick-b.data", [1, "row:12;x"], 0, None),
        ("opt-start.data", [1, "row:abc"], 0, "opt-start-info.children"),
        ("picks-info.children", [big, "row:999999999"], 0, None),
        ("ov-path.data", [1, "row:0", big, 5, "slerp"], 0, "interp-message.children"),
        ("ov-path.data", [1, "row:0", "row:1", "abc", "slerp"], 0, "interp-message.children"),
        ("ov-path.data", [1, "row:0", "row:1", 4, big], 0, "interp-message.children"),
        ("interp-structure.figure", ["abc", bad_overlay], 0, None),
        ("opt-job.data", [1, big, None, "gap", "max", 5, 1], 0, "opt-status.children"),
        ("opt-job.data", [1, "row:0", None, big, "max", 5, 1], 0, "opt-status.children"),
        ("opt-job.data", [1, "row:0", None, "gap", "max", "1e99", 1], 0, "opt-status.children"),
        ("ov-traj.data", [1, big], 0, "opt-status.children"),
        ("ov-traj.data", [1, {"job": 1}], 0, "opt-status.children"),
        ("opt-structure.figure", [big, {"refs": ["row:abc"], "labels": ["a"], "valid": [True], "xy": [[0, 0]]}], 0,
         "opt-frame-info.children"),
        ("ov-samples.data", [1, "abc", 0], 0, "sample-message.children"),
        ("ov-samples.data", [1, 2, big], 0, "sample-message.children"),
        ("ov-upload.data", [{"x": 1}, "a.xyz", None], 0, "upload-message.children"),
        ("ov-upload.data", ["data:;base64,AAAA", big + ".xyz", None], 0, "upload-message.children"),
        ("selection-refs.data", [{"points": [{"curveNumber": 0, "pointNumber": "abc"}, big]}], 0, None),
    ]
    for output, values, trigger, error_out in cases:
        status, out = post(client, app, output, values, trigger)
        assert status in (200, 204), (output, status)
        if error_out is not None:
            _assert_short_error(out[error_out], big)
        for value in out.values():  # nothing echoes a long bad value whole
            assert big[:1000] not in json.dumps(value)
    # a well-formed overlay with a bad reference: the frame view says so in the page
    status, out = post(client, app, "opt-structure.figure",
                       [0, {"refs": ["row:abc"], "labels": ["a"], "valid": [True], "xy": [[0, 0]]}])
    assert status == 200 and "not a structure reference" in _assert_short_error(out["opt-frame-info.children"])
    # downloads: a forged button id, a forged state, a bad frame index
    key, cb = _callback(app, "download.data")
    download_id = {"type": "download", "what": big, "fmt": "xyz"}
    body = {"output": key, "outputs": [{"id": "download", "property": "data"}, {"id": "download-message", "property": "children"}],
            "inputs": [{"id": {"type": "download", "what": "x", "fmt": "y"}, "property": "n_clicks", "value": 1}],
            "state": [dict(s, value=None) for s in cb["state"]],
            "changedPropIds": [json.dumps(download_id, separators=(",", ":"), sort_keys=True) + ".n_clicks"]}
    body["inputs"] = [[{"id": download_id, "property": "n_clicks", "value": 1}]]
    res = client.post("/_dash-update-component", json=body)
    assert res.status_code == 200
    msg = res.get_json()["response"]["download-message"]["children"]
    assert "the download must be one of" in _assert_short_error(msg, big)


def test_unexpected_exception_becomes_an_in_page_error(app, client, explorer, monkeypatch):
    def broken(ref):
        raise RuntimeError("boom " + "y" * 10_000)

    monkeypatch.setattr(explorer, "reconstruction", broken)
    status, out = post(client, app, "structure-original.figure", ["row:0"])  # the structure still shows
    assert status == 200 and out["structure-original.figure"]["data"]
    status, out = post(client, app, "structure-recon.figure", ["row:0"])
    assert status == 200
    text = _assert_short_error(out["structure-info.children"])
    assert "internal error (RuntimeError)" in text and "yyyy" not in text


def test_callbacks_happy_paths_over_http(app, client, explorer):
    status, out = post(client, app, "current-ref.data", [{"points": [{"curveNumber": 0, "pointNumber": 1}]}])
    ref = out["current-ref.data"]
    assert status == 200 and ref == f"row:{explorer.trace_rows[0][1]}"
    status, out = post(client, app, "ov-path.data", [1, "row:0", ref, 4, "linear"])
    assert status == 200 and len(out["ov-path.data"]["refs"]) == 4 and out["interp-slider.max"] == 3
    status, out = post(client, app, "ov-samples.data", [1, 3, 7])
    assert status == 200 and out["sample-message.children"].startswith("3 samples (seed 7)")
    status, out = post(client, app, "opt-start.data", [1, ref])
    assert out["opt-start.data"] == ref and out["opt-start-info.children"] == f"start: {explorer.label(ref)}"


# ------------------------------------------------------------------ values, not just keys
def test_click_panel_values_match_the_model(explorer):
    from atomarch.chem.bonds import mol_smiles, to_rdkit
    from atomarch.metrics.reconstruction import heavy_atom_rmsd

    ref = explorer.ref_from_click({"points": [{"curveNumber": 2, "pointNumber": 1}]})
    pos = explorer.trace_rows[2][1]
    assert ref == f"row:{pos}" and explorer.table["split"].iat[pos] == "test"
    atoms = explorer.atoms(ref)
    truth = explorer.datamodule.packed.atoms(int(explorer.table["index"].iat[pos]))
    np.testing.assert_array_equal(atoms.positions, truth.positions)
    recon, score = explorer.reconstruction(ref)
    direct = explorer.model.reconstruct([truth])[0]
    assert recon.info["smiles"] == direct.info["smiles"]
    np.testing.assert_allclose(recon.positions, direct.positions, atol=1e-6)
    assert score["smiles_recon"] in (direct.info.get("smiles"), mol_smiles(to_rdkit(direct)))
    assert score["smiles"] and (score["match"] is True or score["match"] is False)
    want = heavy_atom_rmsd(truth, direct)
    assert (score["rmsd"] is None) == (want is None) and (want is None or abs(score["rmsd"] - want) < 1e-6)
    _, _, text = describe_structure(explorer, ref)
    assert f"SMILES match: {'yes' if score['match'] else 'no'}" in text
    np.testing.assert_allclose(explorer.xy_of(ref), explorer.model.project(explorer.model.encode([truth]))[0], atol=1e-4)


def test_sampling_panel_values_match_the_model(explorer):
    result = explorer.sample(5, seed=11)
    direct = explorer.model.sample(5, seed=11)
    assert [a.info["smiles"] for a in result.frames] == [a.info["smiles"] for a in direct]
    for a, b in zip(result.frames, direct):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    ok = [k for k, a in enumerate(direct) if len(a)]
    np.testing.assert_allclose(result.xy[ok], explorer.model.project(explorer.model.encode([direct[k] for k in ok])), atol=1e-4)
    from atomarch.latent.optimize import validity

    np.testing.assert_array_equal(result.valid, validity(direct)[0])
    other = explorer.sample(5, seed=12)
    assert [a.info["smiles"] for a in other.frames] != [a.info["smiles"] for a in result.frames]


def test_optimisation_panel_values_match_the_model(explorer):
    job = explorer.job(explorer.start_optimization("row:2", "gap", "min", steps=6, decode_every=3))
    deadline = time.time() + 120
    while job.status == "running" and time.time() < deadline:
        time.sleep(0.1)
    assert job.status == "done", job.error
    traj = explorer.model.optimize([explorer.atoms("row:2")], {"gap": "min"}, steps=6, decode_every=3)
    result = job.result
    np.testing.assert_allclose(result.values["pred_gap"], traj.predicted["gap"][0], atol=1e-5)
    assert result.values["pred_gap"][-1] < result.values["pred_gap"][0]  # minimised
    np.testing.assert_allclose(result.xy, explorer.model.project(traj.latents[0]), atol=1e-4)
    np.testing.assert_array_equal(result.valid, traj.valid[0])
    assert [a.info.get("smiles") for a in result.frames] == [a.info.get("smiles") for a in traj.structures[0]]
