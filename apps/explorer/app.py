"""The Explorer's page: layout, thin Dash callbacks, and the ``atomarch explore`` entry point.

Every callback delegates to :class:`~apps.explorer.service.Explorer` and to the pure figure
builders of :mod:`apps.explorer.figures`; errors from bad requests (an
:class:`~atomarch.errors.AtomarchError`) are shown in the page and never stop the app. Callback
inputs come from the browser and are untrusted: the service validates them, and any other
exception is caught by :func:`_guarded` and answered with an in-page error, never an HTTP 500.

Browser-side state lives in small ``dcc.Store`` components: the clicked point and the picks A, B
and optimisation start (structure references, see :mod:`apps.explorer.service`), and one
overlay summary per map overlay (map coordinates, references, labels — never structures).

The same page serves molecule and crystal models (``model.decoder.periodic``): a crystal is shown
as its unit cell (:func:`apps.explorer.figures.crystal_figure`) with its lattice parameters,
space group and formula beside it, and its reconstruction is judged by StructureMatcher.

Several checkpoints: :func:`run_explorer` serves one app per checkpoint folder under
``checkpoints/`` that holds a ``map.parquet`` (:func:`checkpoint_choices`), each under its own
URL (``/ckpt/<folder>/``; the ``--ckpt`` one at ``/``) and built on its first visit
(:class:`ExplorerDispatcher`); the page's checkpoint selector navigates between them. Apps share
nothing, so a tab keeps working on its own model while another tab shows a different one.
"""

from __future__ import annotations

import functools
import html as html_escape
import re
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dash
import numpy as np
import pandas as pd
from dash import ALL, Input, Output, Patch, State, ctx, dash_table, dcc, html, no_update
from dash.exceptions import PreventUpdate

from apps.explorer import figures
from apps.explorer.service import (
    MAX_SAMPLES,
    MAX_STEPS,
    Explorer,
    ExplorerError,
    as_choice,
    as_int,
    sha256_prefix,
    shown,
    validity_text,
)
from atomarch.errors import AtomarchError

DEFAULT_CKPT = Path("checkpoints") / "qm9-vae"
#: where the checkpoint selector looks for checkpoint folders (each with a ``map.parquet``)
CHECKPOINTS_ROOT = Path("checkpoints")
#: URL prefix of the app of checkpoint folder <name>: ``/ckpt/<name>/``
CKPT_URL = "/ckpt/{}/"
CKPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
#: rows shown in the selection table (the CSV/extxyz export holds all of them)
TABLE_ROWS = 1000
#: small 3D views in the sampling grid (all samples go on the map)
GRID_MAX = 12
OVERLAY_STORES = {"upload": "ov-upload", "samples": "ov-samples", "path": "ov-path", "trajectory": "ov-traj"}
#: longest error message shown in the page
MAX_MESSAGE_CHARS = 300
DOWNLOADS = ("current", "recon", "path", "path-frame", "traj", "traj-frame", "samples", "selection")


def overlay_data(data: Any) -> dict | None:
    """An overlay store's summary (see ``FrameSet.overlay``) if it is well formed — lists ``refs``,
    ``labels``, ``valid`` and ``xy`` ([n, 2], numbers or None) of one length n — else None."""
    if not isinstance(data, dict):
        return None
    refs, labels, valid, xy = (data.get(k) for k in ("refs", "labels", "valid", "xy"))
    if not all(isinstance(v, list) for v in (refs, labels, valid, xy)):
        return None
    n = len(refs)
    if not (len(labels) == len(valid) == len(xy) == n) or not all(isinstance(r, str) for r in refs):
        return None
    if not all(isinstance(p, list) and len(p) == 2 and all(v is None or isinstance(v, (int, float)) for v in p) for p in xy):
        return None
    return data


# ------------------------------------------------------------------------------ pure helpers
def overlay_trace(slot: str, data: dict | None) -> Any:
    """The map trace of an overlay store's summary (see ``FrameSet.overlay``); empty if None."""
    data = overlay_data(data)
    if not data or not data.get("refs"):
        return figures.empty_overlay(slot)
    xy = np.array([[np.nan if v is None else v for v in p] for p in data["xy"]], dtype=np.float32).reshape(-1, 2)
    if slot in ("path", "trajectory"):
        return figures.path_overlay(slot, xy, data["refs"], data["labels"], valid=data.get("valid"),
                                    color="#ff7f0e" if slot == "path" else "#2ca02c")
    symbol, color = {"upload": ("star", "#d62728"), "samples": ("cross", "#9467bd")}.get(slot, ("circle", "#000000"))
    return figures.points_overlay(slot, xy, data["refs"], data["labels"], symbol=symbol, color=color)


def picks_trace(explorer: Explorer, a: str | None, b: str | None, start: str | None) -> Any:
    """Ring markers for the picks A, B and the optimisation start. (A plain click does not touch
    the map: redrawing a 130k-point WebGL map costs more than the structure panel itself.)"""
    refs, labels, xy = [], [], []
    for name, ref in (("A", a), ("B", b), ("start", start)):
        if not ref:
            continue
        pos = explorer.xy_of(ref)  # None for a bad or unknown reference
        if pos is None:
            continue
        refs.append(ref)
        labels.append(f"{name}: {safe_label(explorer, ref)}")
        xy.append(pos)
    trace = figures.points_overlay("picks", np.array(xy, np.float32).reshape(-1, 2), refs, labels,
                                   symbol="circle-open", color="#000000", size=16)
    trace.marker.line.width = 3
    trace.mode = "markers+text"
    trace.textposition = "top center"
    trace.hovertemplate = "%{customdata}<extra>picked</extra>"
    trace.customdata, trace.text = refs, [lab.split(":")[0] for lab in labels]
    return trace


def safe_label(explorer: Explorer, ref: Any) -> str:
    """The reference's label, or what is wrong with it (never raises)."""
    try:
        return explorer.label(ref)
    except AtomarchError as exc:
        return str(exc)[:MAX_MESSAGE_CHARS]


def frames_strip(data: dict | None, id_prefix: str) -> list:
    """One chip per frame (class ``frame-chip valid``/``invalid``) for a path or trajectory."""
    if not data:
        return []
    return [html.Span(str(k), className="frame-chip " + ("valid" if ok else "invalid"), id=f"{id_prefix}-{k}",
                      title=label) for k, (ok, label) in enumerate(zip(data["valid"], data["labels"]))]


def original_view(explorer: Explorer, ref: str) -> Any:
    """Figure of the structure a reference names (fast: no model call)."""
    atoms = explorer.atoms(ref)
    return figures.structure_figure(atoms, f"original · {figures.frame_label(atoms)}", uirevision="structure")


def reconstruction_view(explorer: Explorer, ref: str) -> tuple[Any, str]:
    """Figure of a structure's reconstruction (the model's encode → decode, cached) and the
    comparison line: heavy-atom RMSD and SMILES match for molecules, StructureMatcher verdict
    and RMS for crystals."""
    recon, score = explorer.reconstruction(ref)
    rec_fig = figures.structure_figure(recon, f"reconstruction · {figures.frame_label(recon)}", uirevision="structure")
    if explorer.periodic:
        return rec_fig, crystal_verdict(score)
    rmsd = "n/a (heavy-atom compositions differ)" if score["rmsd"] is None else f"{score['rmsd']:.3f} Å"
    match = "yes" if score["match"] else "no"
    text = (f"heavy-atom RMSD {rmsd} · SMILES match: {match} "
            f"({score['smiles'] or 'invalid'} → {score['smiles_recon'] or 'invalid'})")
    return rec_fig, text


def describe_structure(explorer: Explorer, ref: str) -> tuple[Any, Any, str]:
    """Figures of a structure and its reconstruction, and the comparison line (see
    :func:`original_view`, :func:`reconstruction_view`)."""
    return (original_view(explorer, ref), *reconstruction_view(explorer, ref))


def crystal_verdict(score: dict[str, Any]) -> str:
    """The comparison line of a crystal and its reconstruction (see ``Explorer.reconstruction``)."""
    rms = f"RMS {score['rms']:.3f} (normalised by (V/N)^1/3)" if score.get("rms") is not None else "RMS n/a"
    return (f"StructureMatcher match: {'yes' if score['match'] else 'no'} · {rms} · "
            f"{score['formula'] or '(empty)'} → {score['formula_recon'] or '(empty)'} · reconstruction: "
            + validity_text(score["structure_valid"], score["composition_valid"]))


def cell_panel(atoms: Any, id_: str | None = None) -> html.Div:
    """Lattice parameters, space group (spglib, symprec 0.1 Å) and formula of a crystal as a
    small table (``figures.crystal_summary``); an empty panel for anything that is not a crystal."""
    kwargs = {"id": id_} if id_ else {}
    if atoms is None or not figures.is_crystal(atoms):
        return html.Div("no unit cell" if atoms is not None and len(atoms) == 0 else "", className="cell-info", **kwargs)
    info = figures.crystal_summary(atoms)
    group = (f"{info['space_group']} ({info['space_group_number']})" if info["space_group"] else "n/a (spglib found none)")
    rows = [("formula", f"{info['formula']} ({info['formula_cell']}, {info['natoms']} atoms)"),
            ("space group", group),
            ("a, b, c", f"{info['a']:.3f}, {info['b']:.3f}, {info['c']:.3f} Å"),
            ("α, β, γ", f"{info['alpha']:.2f}, {info['beta']:.2f}, {info['gamma']:.2f}°"),
            ("volume", f"{info['volume']:.2f} Å³")]
    return html.Div(html.Table([html.Tr([html.Th(k), html.Td(v)]) for k, v in rows]), className="cell-info", **kwargs)


def frame_title(data: dict, k: int) -> str:
    """Title of frame ``k`` of a path/trajectory overlay summary: its validity (for crystals the
    structural and compositional validity, from the summary's ``values``)."""
    values = data.get("values") if isinstance(data.get("values"), dict) else {}
    parts = [values.get(key) for key in ("structure_valid", "composition_valid")]
    if all(isinstance(v, list) and len(v) > k and v[k] is not None for v in parts):
        return f"frame {k} · " + validity_text(bool(parts[0][k]), bool(parts[1][k]))
    return f"frame {k} · {'valid' if data['valid'][k] else 'invalid'}"


def download_payload(explorer: Explorer, what: str, fmt: str, state: dict[str, Any]) -> dict:
    """``dcc.Download`` data for a download button.

    Args:
        what: ``current``, ``recon``, ``path``, ``path-frame``, ``traj``, ``traj-frame``,
            ``samples`` or ``selection``.
        fmt: ``xyz``, ``extxyz``, ``sdf`` (molecules), ``cif``, ``extxyz`` (crystals) or
            (selection only) ``csv``.
        state: the page state: ``current`` (ref), ``path``/``traj``/``samples`` (overlay
            summaries), ``path_k``/``traj_k`` (slider positions), ``selection`` (refs).
    """
    what = as_choice(what, "the download", DOWNLOADS)
    if not isinstance(state, dict):
        raise ExplorerError("bad page state")

    def refs_of(key: str) -> list[str]:
        data = overlay_data(state.get(key))
        if not data or not data.get("refs"):
            raise ExplorerError(f"nothing to download yet: compute the {key} first")
        return list(data["refs"])

    if what == "current":
        if not state.get("current"):
            raise ExplorerError("click a point on the map first")
        return dcc.send_bytes(explorer.structures_file([state["current"]], fmt), f"structure.{fmt}")
    if what == "recon":
        if not state.get("current"):
            raise ExplorerError("click a point on the map first")
        return dcc.send_bytes(explorer.reconstruction_file(state["current"], fmt), f"reconstruction.{fmt}")
    if what in ("path", "traj", "samples"):
        return dcc.send_bytes(explorer.structures_file(refs_of(what), fmt), f"{what}.{fmt}")
    if what in ("path-frame", "traj-frame"):
        key = what.split("-")[0]
        refs = refs_of(key)
        k = min(as_int(state.get(f"{key}_k") or 0, "the frame", 0, 10**6), len(refs) - 1)
        return dcc.send_bytes(explorer.structures_file([refs[k]], fmt), f"{key}_frame{k}.{fmt}")
    if what == "selection":
        refs = state.get("selection") or []
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise ExplorerError(f"a selection is a list of structure references, got {shown(refs)}")
        if not refs:
            raise ExplorerError("select points on the map first (box or lasso)")
        if fmt == "csv":
            return dcc.send_string(explorer.selection_table(refs).to_csv(index=False), "selection.csv")
        return dcc.send_bytes(explorer.structures_file(refs, fmt), f"selection.{fmt}")
    raise ExplorerError(f"unknown download {shown(what)}")


# ------------------------------------------------------------------------------------ layout
def _frames_panel(prefix: str, title: str, download: str, download_label: str,
                  formats: Sequence[str] = ("xyz", "extxyz", "sdf")) -> list:
    """The frame strip, slider, frame info, 3D view and downloads shared by the interpolation and
    optimisation tabs (ids ``<prefix>-frames``, ``-slider``, ``-frame-info``, ``-structure``;
    downloads ``<download>`` for the whole path and ``<download>-frame`` for the shown frame, in
    ``formats``; the whole path in the multi-structure ones among them)."""
    return [
        html.Div(id=f"{prefix}-frames", className="frames"),
        dcc.Slider(id=f"{prefix}-slider", min=0, max=1, step=1, value=0, marks=None, updatemode="drag"),
        html.Div(id=f"{prefix}-frame-info", className="info"),
        dcc.Graph(id=f"{prefix}-structure", figure=figures.structure_figure(None, title, uirevision=prefix)),
        html.Div([_download_buttons(download, [f for f in formats if f != "xyz"], download_label),
                  _download_buttons(f"{download}-frame", formats, "this frame")]),
    ]


def _download_buttons(what: str, formats: Sequence[str], label: str = "Download") -> html.Span:
    return html.Span([html.Span(f"{label}: ", className="muted")] + [
        html.Button(fmt, id={"type": "download", "what": what, "fmt": fmt}, className="small") for fmt in formats
    ], className="downloads")


def _number(id_: str, value: int, lo: int, hi: int, label: str) -> html.Label:
    return html.Label([label, dcc.Input(id=id_, type="number", value=value, min=lo, max=hi, step=1, debounce=True,
                                        className="num")])


def _checkpoint_selector(selector: dict[str, Any] | None) -> list:
    """The header's checkpoint dropdown (``ckpt-select``; options' values are app URLs) and the
    ``dcc.Location`` it navigates with; nothing when there is no other checkpoint."""
    if not selector or len(selector.get("options", [])) < 2:
        return []
    return [html.Div([html.Span("switch checkpoint: ", className="muted"),
                      dcc.Dropdown(id="ckpt-select", options=selector["options"], value=selector["value"],
                                   clearable=False, className="inline-dropdown wide")], className="controls"),
            dcc.Location(id="nav", refresh=True)]


def _layout(explorer: Explorer, ckpt_label: str, map_label: str, selector: dict[str, Any] | None = None) -> html.Div:
    table = explorer.table
    color_opts = figures.color_options(table)
    color0 = color_opts[0]["value"] if color_opts else None
    props = explorer.properties
    formats = explorer.download_formats
    what = "crystal" if explorer.periodic else "molecule"
    structure_tab = dcc.Tab(label="Structure", value="structure", children=[
        html.Div(id="structure-info", className="info", children=f"Click a point on the map to see its {what}."),
        html.Div(id="structure-status", className="info"),
        html.Div([html.Div([dcc.Graph(id="structure-original", figure=figures.structure_figure(None, "original")),
                            html.Div(id="structure-original-cell", className="cell-info")], className="half"),
                  html.Div([dcc.Graph(id="structure-recon", figure=figures.structure_figure(None, "reconstruction")),
                            html.Div(id="structure-recon-cell", className="cell-info")], className="half")],
                 className="row"),
        html.Div([_download_buttons("current", formats, "original"),
                  _download_buttons("recon", formats, "reconstruction")]),
    ])
    interp_tab = dcc.Tab(label="Interpolation", value="interpolation", children=[
        html.Div([_number("interp-steps", 10, 2, MAX_STEPS, "steps "),
                  dcc.Dropdown(id="interp-method", options=["slerp", "linear"], value="slerp", clearable=False,
                               className="inline-dropdown"),
                  html.Button("Interpolate A → B", id="interp-run")], className="controls"),
        html.Div(id="interp-message", className="message"),
        *_frames_panel("interp", "interpolation frame", "path", "path", formats),
    ])
    opt_tab = dcc.Tab(label="Optimisation", value="optimisation", children=[
        html.Div(id="opt-start-info", className="info", children="start: — (click a point, then 'Set as start')"),
        html.Div([dcc.Dropdown(id="opt-prop", options=props, value=props[0] if props else None, clearable=False,
                               className="inline-dropdown"),
                  dcc.RadioItems(id="opt-direction", options=[{"label": "maximise", "value": "max"},
                                                              {"label": "minimise", "value": "min"}],
                                 value="max", inline=True),
                  _number("opt-steps", 100, 1, 2000, "steps "), _number("opt-every", 10, 1, 1000, "decode every "),
                  html.Button("Run", id="opt-run")], className="controls"),
        html.Div([html.Progress(id="opt-progress", style={"display": "none"}), html.Span(id="opt-status")],
                 className="message"),
        dcc.Interval(id="opt-interval", interval=500, disabled=True),
        *_frames_panel("opt", "optimisation frame", "traj", "trajectory", formats),
    ])
    sample_tab = dcc.Tab(label="Sampling", value="sampling", children=[
        html.Div([_number("sample-n", 8, 1, MAX_SAMPLES, "samples "), _number("sample-seed", 0, 0, 2**31 - 1, "seed "),
                  html.Button("Sample the prior", id="sample-run")], className="controls"),
        html.Div(id="sample-message", className="message"),
        dcc.Graph(id="sample-grid", figure=figures.grid_figure([], [])),
        _download_buttons("samples", [f for f in formats if f != "xyz"], "samples"),
    ])
    upload_tab = dcc.Tab(label="Upload", value="upload", children=[
        dcc.Upload(id="upload", children=html.Div(["Drop or ", html.A("choose"), (
                       " a CIF or extxyz file of crystals (a cell, pbc on all axes; " if explorer.periodic
                       else " an xyz / extxyz / sdf / cif file (") + "≤ 2 MB, ≤ 100 structures of ≤ 500 atoms)"]),
                   className="upload", multiple=False),
        html.Div(id="upload-message", className="message"),
    ])
    return html.Div([
        html.Div([html.H2("atomarch Explorer"),
                  html.Div([html.Span("checkpoint: ", className="muted"), html.Code(ckpt_label, id="ckpt-label")]),
                  html.Div([html.Span("map: ", className="muted"), html.Code(map_label, id="map-label"),
                            html.Span(f" · {len(table):,} structures", className="muted")]),
                  *_checkpoint_selector(selector)], className="header"),
        html.Div([
            html.Div([
                html.Div([html.Label(["colour by ", dcc.Dropdown(id="color-by", options=color_opts, value=color0,
                                                                 clearable=False, className="inline-dropdown wide")])],
                         className="controls"),
                dcc.Graph(id="map", figure=figures.map_figure(table, color0), className="map",
                          config={"scrollZoom": True, "displaylogo": False}),
                html.Div([html.Span(id="current-info", children="no point clicked"),
                          html.Button("Set as A", id="set-a"), html.Button("Set as B", id="set-b"),
                          html.Button("Set as start", id="set-start")], className="controls"),
                html.Div(id="picks-info", className="info", children="A: — · B: —"),
                html.Div(id="selection-info", className="info", children="Select points with the box or lasso tool."),
                dash_table.DataTable(id="selection-table", page_size=10, sort_action="native",
                                     style_table={"overflowX": "auto"}, style_cell={"fontSize": 12, "padding": "2px 6px"}),
                _download_buttons("selection", ["csv", "extxyz"], "selection"),
                html.Div(id="download-message", className="message"),
            ], className="left"),
            html.Div([dcc.Tabs(id="tabs", value="structure",
                               children=[structure_tab, interp_tab, opt_tab, sample_tab, upload_tab])], className="right"),
        ], className="main"),
        dcc.Store(id="current-ref"), dcc.Store(id="pick-a"), dcc.Store(id="pick-b"), dcc.Store(id="opt-start"),
        dcc.Store(id="opt-job"), dcc.Store(id="selection-refs"),
        *[dcc.Store(id=sid) for sid in OVERLAY_STORES.values()],
        dcc.Download(id="download"),
    ], className="page")


# --------------------------------------------------------------------------------- callbacks
def _error(exc: Exception) -> html.Span:
    text = str(exc)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return html.Span(text, className="error")


def _guarded(n_outputs: int, error_at: int | None) -> Callable[[Callable], Callable]:
    """Callback decorator: an exception the callback did not turn into a message (a bug, or an
    input no check foresaw) becomes an in-page error in output ``error_at`` (or no update when
    the callback has no message output) and a traceback on stderr — never an HTTP 500."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args: Any) -> Any:
            try:
                return fn(*args)
            except PreventUpdate:
                raise
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                if error_at is None:
                    raise PreventUpdate from None
                out: list[Any] = [no_update] * n_outputs
                message = str(exc) if isinstance(exc, AtomarchError) else f"internal error ({type(exc).__name__}); see the server log"
                out[error_at] = _error(ExplorerError(message))
                return tuple(out) if n_outputs > 1 else out[0]
        return inner
    return wrap


def _register_callbacks(app: dash.Dash, explorer: Explorer) -> None:
    table = explorer.table

    @app.callback(Output("map", "figure"), Input("color-by", "value"),
                  *[Input(sid, "data") for sid in OVERLAY_STORES.values()],
                  Input("pick-a", "data"), Input("pick-b", "data"), Input("opt-start", "data"),
                  prevent_initial_call=True)
    @_guarded(1, None)
    def update_map(color_by, ov_upload, ov_samples, ov_path, ov_traj, a, b, start):
        """Patch only what changed: marker colours, or the overlay traces."""
        triggered = {t.split(".")[0] for t in ctx.triggered_prop_ids}
        patch = Patch()
        if "color-by" in triggered and not isinstance(color_by, str):
            raise PreventUpdate
        if "color-by" in triggered:
            values = figures.color_values(table, color_by)
            cmin, cmax = figures.color_range(values, error=str(color_by).startswith("err_"))
            for k, rows in enumerate(explorer.trace_rows):
                patch["data"][k]["marker"]["color"] = figures.typed_array(values[rows])
                patch["data"][k]["marker"]["cmin"] = cmin
                patch["data"][k]["marker"]["cmax"] = cmax
            patch["data"][0]["marker"]["colorbar"]["title"]["text"] = color_by
        for slot, sid in OVERLAY_STORES.items():
            if sid in triggered:
                data = {"upload": ov_upload, "samples": ov_samples, "path": ov_path, "trajectory": ov_traj}[slot]
                patch["data"][figures.overlay_index(table, slot)] = overlay_trace(slot, data).to_plotly_json()
        if triggered & {"pick-a", "pick-b", "opt-start"}:
            patch["data"][figures.overlay_index(table, "picks")] = picks_trace(explorer, a, b, start).to_plotly_json()
        return patch

    @app.callback(Output("current-ref", "data"), Input("map", "clickData"), prevent_initial_call=True)
    @_guarded(1, None)
    def on_click(click_data):
        ref = explorer.ref_from_click(click_data)
        return ref if ref else no_update

    # the clicked structure shows at once; its reconstruction (seconds: the decoder proposes
    # candidates, the encoder verifies them) follows in its own callback
    @app.callback(Output("structure-original", "figure"), Output("current-info", "children"),
                  Output("structure-original-cell", "children"),
                  Input("current-ref", "data"), prevent_initial_call=True)
    @_guarded(3, None)
    def show_original(ref):
        if not ref:
            return (no_update,) * 3
        try:
            label = f"clicked: {explorer.label(ref)}"
            figure = original_view(explorer, ref)
            cell = cell_panel(explorer.atoms(ref)).children if explorer.periodic else ""
        except AtomarchError:  # the reconstruction callback reports it in the panel
            return no_update, "no point clicked", no_update
        return figure, label, cell

    @app.callback(Output("structure-recon", "figure"), Output("structure-info", "children"),
                  Output("structure-recon-cell", "children"),
                  Input("current-ref", "data"), prevent_initial_call=True,
                  running=[(Output("structure-status", "children"), "reconstructing …", "")])
    @_guarded(3, 1)
    def show_reconstruction(ref):
        if not ref:
            return (no_update,) * 3
        try:
            figure, text = reconstruction_view(explorer, ref)
            cell = cell_panel(explorer.reconstruction(ref)[0]).children if explorer.periodic else ""
        except AtomarchError as exc:
            return no_update, _error(exc), no_update
        return figure, html.Span(text, id="structure-score"), cell

    @app.callback(Output("pick-a", "data"), Input("set-a", "n_clicks"), State("current-ref", "data"), prevent_initial_call=True)
    @_guarded(1, None)
    def set_a(_, ref):
        return ref if ref and explorer.xy_of(ref) is not None else no_update

    @app.callback(Output("pick-b", "data"), Input("set-b", "n_clicks"), State("current-ref", "data"), prevent_initial_call=True)
    @_guarded(1, None)
    def set_b(_, ref):
        return ref if ref and explorer.xy_of(ref) is not None else no_update

    @app.callback(Output("opt-start", "data"), Output("opt-start-info", "children"), Input("set-start", "n_clicks"),
                  State("current-ref", "data"), prevent_initial_call=True)
    @_guarded(2, 1)
    def set_start(_, ref):
        if not ref:
            return no_update, no_update
        try:
            return ref, f"start: {explorer.label(ref)}"
        except AtomarchError as exc:
            return no_update, _error(exc)

    @app.callback(Output("picks-info", "children"), Input("pick-a", "data"), Input("pick-b", "data"))
    @_guarded(1, 0)
    def show_picks(a, b):
        return f"A: {safe_label(explorer, a) if a else '—'} · B: {safe_label(explorer, b) if b else '—'}"

    @app.callback(Output("ov-path", "data"), Output("interp-message", "children"), Output("interp-frames", "children"),
                  Output("interp-slider", "max"), Output("interp-slider", "value"), Output("interp-slider", "marks"),
                  Input("interp-run", "n_clicks"), State("pick-a", "data"), State("pick-b", "data"),
                  State("interp-steps", "value"), State("interp-method", "value"), prevent_initial_call=True)
    @_guarded(6, 1)
    def run_interpolation(_, a, b, steps, method):
        try:
            result = explorer.interpolate(a, b, steps or 0, method)
        except AtomarchError as exc:
            return no_update, _error(exc), no_update, no_update, no_update, no_update
        data = result.overlay()
        n = len(result.frames)
        marks = {k: {"label": "✓" if v else "✗"} for k, v in enumerate(result.valid.tolist())}
        msg = f"{n} frames, {int(result.valid.sum())} valid ({method})"
        return data, msg, frames_strip(data, "interp-frame"), n - 1, 0, marks

    @app.callback(Output("interp-structure", "figure"), Output("interp-frame-info", "children"),
                  Input("interp-slider", "value"), Input("ov-path", "data"), prevent_initial_call=True)
    @_guarded(2, 1)
    def show_interp_frame(k, data):
        return _frame_view(explorer, data, k, "interp")

    @app.callback(Output("opt-job", "data"), Output("opt-interval", "disabled"), Output("opt-status", "children"),
                  Output("opt-progress", "style"),
                  Input("opt-run", "n_clicks"), State("opt-start", "data"), State("current-ref", "data"),
                  State("opt-prop", "value"), State("opt-direction", "value"), State("opt-steps", "value"),
                  State("opt-every", "value"), prevent_initial_call=True)
    @_guarded(4, 2)
    def start_optimisation(_, start, current, prop, direction, steps, every):
        try:
            job_id = explorer.start_optimization(start or current, prop, direction, steps or 0, every or 0)
        except AtomarchError as exc:
            return no_update, True, _error(exc), {"display": "none"}
        return job_id, False, "running…", {"display": "inline-block"}

    @app.callback(Output("ov-traj", "data"), Output("opt-interval", "disabled", allow_duplicate=True),
                  Output("opt-status", "children", allow_duplicate=True), Output("opt-progress", "style", allow_duplicate=True),
                  Output("opt-frames", "children"), Output("opt-slider", "max"), Output("opt-slider", "value"),
                  Output("opt-slider", "marks"),
                  Input("opt-interval", "n_intervals"), State("opt-job", "data"), prevent_initial_call=True)
    @_guarded(8, 2)
    def poll_optimisation(_, job_id):
        skip = (no_update,) * 4
        if not job_id:
            return no_update, True, no_update, {"display": "none"}, *skip
        try:
            job = explorer.job(job_id)
        except AtomarchError as exc:
            return no_update, True, _error(exc), {"display": "none"}, *skip
        if job.status == "running":
            return no_update, False, f"running {job.description} … {job.elapsed:.0f} s", no_update, *skip
        if job.status == "error":
            return no_update, True, _error(ExplorerError(job.error or "failed")), {"display": "none"}, *skip
        result = job.result
        data = result.overlay()
        marks = {k: {"label": "✓" if v else "✗"} for k, v in enumerate(result.valid.tolist())}
        status = f"done in {job.elapsed:.1f} s: {len(result.frames)} frames, {int(result.valid.sum())} valid"
        return data, True, status, {"display": "none"}, frames_strip(data, "opt-frame"), len(result.frames) - 1, 0, marks

    @app.callback(Output("opt-structure", "figure"), Output("opt-frame-info", "children"),
                  Input("opt-slider", "value"), Input("ov-traj", "data"), prevent_initial_call=True)
    @_guarded(2, 1)
    def show_opt_frame(k, data):
        return _frame_view(explorer, data, k, "opt")

    @app.callback(Output("ov-samples", "data"), Output("sample-grid", "figure"), Output("sample-message", "children"),
                  Input("sample-run", "n_clicks"), State("sample-n", "value"), State("sample-seed", "value"),
                  prevent_initial_call=True)
    @_guarded(3, 2)
    def run_sampling(_, n, seed):
        try:
            result = explorer.sample(n or 0, seed or 0)
        except AtomarchError as exc:
            return no_update, no_update, _error(exc)
        grid = result.frames[:GRID_MAX]
        titles = [f"{k}: {(a.info.get('smiles') if not explorer.periodic else None) or figures.frame_label(a)}"
                  f"{'' if v else ' ✗'}" for k, (a, v) in enumerate(zip(grid, result.valid))]
        more = f" (first {GRID_MAX} shown here, all on the map)" if len(result.frames) > GRID_MAX else ""
        msg = f"{len(result.frames)} samples (seed {seed or 0}), {int(result.valid.sum())} valid{more}"
        return result.overlay(), figures.grid_figure(grid, titles), msg

    @app.callback(Output("ov-upload", "data"), Output("upload-message", "children"),
                  Input("upload", "contents"), State("upload", "filename"), State("ov-upload", "data"),
                  prevent_initial_call=True)
    @_guarded(2, 1)
    def on_upload(contents, filename, previous):
        if contents is None:
            return no_update, no_update
        try:
            result = explorer.upload(filename, contents)
        except AtomarchError as exc:
            return no_update, _error(exc)
        data = result.overlay()
        previous = overlay_data(previous)
        if previous and previous.get("refs"):  # keep earlier uploads on the map
            data = {**data, **{k: previous[k] + data[k] for k in ("xy", "refs", "labels", "valid")}}
        name = Path(filename or "upload").name
        name = name if len(name) <= 80 else name[:60] + "…" + name[-12:]  # as the service names it
        msg = html.Span(f"{name}: {len(result.frames)} structure(s) placed on the map (red stars); "
                        "click one to see its reconstruction", className="ok", id="upload-ok")
        return data, msg

    @app.callback(Output("selection-refs", "data"), Output("selection-table", "data"), Output("selection-table", "columns"),
                  Output("selection-info", "children"), Input("map", "selectedData"), prevent_initial_call=True)
    @_guarded(4, 3)
    def on_select(selected):
        refs = explorer.refs_from_selection(selected)
        df = explorer.selection_table(refs[:TABLE_ROWS])
        df = df.drop(columns=[c for c in ("x", "y") if c in df.columns])
        for c in df.columns:
            if pd.api.types.is_float_dtype(df[c]):
                df[c] = df[c].astype(float).round(4)
        shown = f" (first {TABLE_ROWS} shown; the export holds all)" if len(refs) > TABLE_ROWS else ""
        return refs, df.to_dict("records"), [{"name": c, "id": c} for c in df.columns], f"{len(refs)} selected{shown}"

    @app.callback(Output("download", "data"), Output("download-message", "children"),
                  Input({"type": "download", "what": ALL, "fmt": ALL}, "n_clicks"),
                  State("current-ref", "data"), State("ov-path", "data"), State("interp-slider", "value"),
                  State("ov-traj", "data"), State("opt-slider", "value"), State("ov-samples", "data"),
                  State("selection-refs", "data"), prevent_initial_call=True)
    @_guarded(2, 1)
    def on_download(clicks, current, path, path_k, traj, traj_k, samples, selection):
        trig = ctx.triggered_id
        if not trig or not isinstance(clicks, list) or not any(clicks):
            return no_update, no_update
        state = {"current": current, "path": path, "path_k": path_k, "traj": traj, "traj_k": traj_k,
                 "samples": samples, "selection": selection}
        try:
            return download_payload(explorer, trig["what"], trig["fmt"], state), ""
        except AtomarchError as exc:
            return no_update, _error(exc)


def _frame_view(explorer: Explorer, data: dict | None, k: int | None, uirev: str) -> tuple[Any, Any]:
    """Structure figure and info line of frame ``k`` of a path/trajectory overlay summary."""
    data = overlay_data(data)
    if not data or not data.get("refs"):
        return no_update, no_update
    try:
        k = min(as_int(k or 0, "the frame", 0, 10**6), len(data["refs"]) - 1)
        atoms = explorer.atoms(data["refs"][k])
    except AtomarchError as exc:
        return no_update, _error(exc)
    ok = data["valid"][k]
    fig = figures.structure_figure(atoms, frame_title(data, k), uirevision=uirev)
    return fig, html.Span(f"frame {k}: {data['labels'][k]}", className="valid" if ok else "invalid-text")


# ----------------------------------------------------------------------------------- factory
def create_app(model: Any, table: pd.DataFrame, ckpt_label: str, map_label: str, datamodule: Any = None,
               timeout: float = 60.0, url_prefix: str = "/", selector: dict[str, Any] | None = None) -> dash.Dash:
    """The Explorer Dash app.

    Args:
        model: a loaded VAE with a stored map projection (``atomarch export``): a molecule or a
            crystal model (``model.decoder.periodic``).
        table: its map table (``atomarch map`` / :func:`atomarch.latent.maps.build_map`).
        ckpt_label, map_label: what the page says it shows (checkpoint hash and config; map file).
        datamodule: the model's data module (default: built on first use).
        timeout: seconds a request waits for the model before answering with a message.
        url_prefix: the URL path the page is served under (``/ckpt/<name>/`` behind
            :class:`ExplorerDispatcher`); the app's routes stay at ``/`` of its own server.
        selector: the checkpoint selector, ``{"options": [{"label", "value": URL}], "value": URL
            of this app}`` (see :func:`selector_options`); shown when it has two or more options.

    Returns:
        the app; ``app.explorer`` is its :class:`~apps.explorer.service.Explorer`.
    """
    if getattr(model, "projection", None) is None:
        raise AtomarchError("this checkpoint has no stored map projection; run `atomarch export --ckpt CKPT --out "
                            "model.ckpt` and `atomarch map` with the exported checkpoint")
    missing = {"index", "split", "x", "y"} - set(table.columns)
    if missing:
        raise AtomarchError(f"the map table lacks the column(s) {', '.join(sorted(missing))}; rebuild it with `atomarch map`")
    explorer = Explorer(model, table, datamodule=datamodule, timeout=timeout)
    app = dash.Dash(__name__, title="atomarch Explorer", assets_folder=str(Path(__file__).parent / "assets"),
                    suppress_callback_exceptions=False, update_title=None,
                    requests_pathname_prefix=url_prefix, routes_pathname_prefix="/")
    app.layout = _layout(explorer, ckpt_label, map_label, selector)
    _register_callbacks(app, explorer)
    if selector and len(selector.get("options", [])) >= 2:
        _register_selector(app, selector)
    app.explorer = explorer  # type: ignore[attr-defined]
    explorer.warm_up()
    return app


def _register_selector(app: dash.Dash, selector: dict[str, Any]) -> None:
    allowed = {o["value"] for o in selector["options"]}

    @app.callback(Output("nav", "href"), Input("ckpt-select", "value"), prevent_initial_call=True)
    @_guarded(1, None)
    def switch_checkpoint(url):
        """Go to the chosen checkpoint's page (a full page load: its own app and model)."""
        if not isinstance(url, str) or url not in allowed or url == selector["value"]:
            raise PreventUpdate
        return url


def checkpoint_choices(root: str | Path = CHECKPOINTS_ROOT) -> dict[str, Path]:
    """The checkpoint folders directly under ``root`` that hold a ``map.parquet`` (and a
    ``*.ckpt``), by folder name (sorted); {} when ``root`` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {d.name: d for d in sorted(root.iterdir())
            if d.is_dir() and CKPT_NAME.fullmatch(d.name) and (d / "map.parquet").is_file() and any(d.glob("*.ckpt"))}


def selector_options(choices: dict[str, Path], default_name: str) -> list[dict[str, str]]:
    """Dropdown options of the checkpoint selector: the default checkpoint (``--ckpt``) at ``/``,
    every other choice at ``/ckpt/<name>/``."""
    opts = [{"label": name, "value": "/" if name == default_name else CKPT_URL.format(name)} for name in choices]
    if default_name not in choices:
        opts.insert(0, {"label": default_name, "value": "/"})
    return opts


class ExplorerDispatcher:
    """One WSGI application serving several checkpoints: ``default`` (an Explorer app) at ``/``,
    and the app of every other folder of ``choices`` at ``/ckpt/<name>/``, built (model and map
    loaded) on its first request and kept. Only names in ``choices`` are served (404 otherwise);
    a checkpoint that fails to load answers with its error in a plain page.

    Args:
        default: the app of the ``--ckpt`` checkpoint.
        default_name: its name in the selector (a key of ``choices`` when it is one of them).
        choices: folder name → checkpoint folder (:func:`checkpoint_choices`).
        timeout, debug: passed on to each app (``debug`` turns Dash's dev tools on).
    """

    def __init__(self, default: dash.Dash, default_name: str, choices: dict[str, Path], timeout: float = 60.0,
                 debug: bool = False) -> None:
        self.default, self.default_name, self.choices = default, default_name, dict(choices)
        self.options = selector_options(self.choices, default_name)
        self.timeout, self.debug = timeout, debug
        self.apps: dict[str, dash.Dash] = {}
        self._lock = threading.Lock()

    def app(self, name: str) -> dash.Dash:
        """The app of checkpoint folder ``name`` (built on first use)."""
        with self._lock:
            if name not in self.apps:
                url = CKPT_URL.format(name)
                model, table, ckpt_label, map_label = load_inputs(str(self.choices[name]), None)
                app = create_app(model, table, ckpt_label, map_label, timeout=self.timeout, url_prefix=url,
                                 selector={"options": self.options, "value": url})
                if self.debug:
                    app.enable_dev_tools(debug=True)
                self.apps[name] = app
            return self.apps[name]

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO") or "/"
        m = re.fullmatch(r"/ckpt/([^/]*)(/.*)?", path)
        if m is None:
            return self.default.server(environ, start_response)
        name = m.group(1)
        if name == self.default_name:
            return self._respond(start_response, "302 Found", "", [("Location", "/")])
        if name not in self.choices:
            return self._respond(start_response, "404 Not Found", f"no checkpoint folder {name[:40]!r} with a map")
        try:
            app = self.app(name)
        except Exception as exc:  # a broken checkpoint must not take the server down
            if isinstance(exc, AtomarchError):
                print(f"[atomarch] cannot open checkpoint {name}: {exc}", file=sys.stderr)
            else:
                traceback.print_exc(file=sys.stderr)
            return self._respond(start_response, "500 Internal Server Error",
                                 f"cannot open checkpoint {name}: {str(exc)[:MAX_MESSAGE_CHARS]}")
        environ = dict(environ, SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + f"/ckpt/{name}", PATH_INFO=m.group(2) or "/")
        return app.server(environ, start_response)

    @staticmethod
    def _respond(start_response: Callable, status: str, text: str, headers: list | None = None) -> list[bytes]:
        body = (f"<!doctype html><title>atomarch Explorer</title><p>{html_escape.escape(text)}</p>"
                '<p><a href="/">back to the Explorer</a></p>').encode()
        start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
                                *(headers or [])])
        return [body]


def checkpoint_label(model: Any) -> str:
    """``<path> · sha256 <12 hex> · config <name>`` of a loaded model."""
    path = Path(model.checkpoint_path)
    return f"{path} · sha256 {sha256_prefix(path)} · config {model.cfg.name}"


def checkpoint_path(ckpt: str | None) -> Path:
    """The ``--ckpt`` path, or the shipped default (``checkpoints/qm9-vae``, also when run from
    outside the repository)."""
    ckpt_path = Path(ckpt) if ckpt else DEFAULT_CKPT
    if not ckpt and not ckpt_path.exists():  # run from outside the repository
        import atomarch

        ckpt_path = Path(atomarch.__file__).resolve().parents[1] / DEFAULT_CKPT
    return ckpt_path


def load_inputs(ckpt: str | None, map_path: str | None) -> tuple[Any, pd.DataFrame, str, str]:
    """Model, map table and their labels for ``atomarch explore``; builds (and saves) the map when
    the file is missing."""
    import atomarch

    ckpt_path = checkpoint_path(ckpt)
    model = atomarch.load_model(ckpt_path)
    folder = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
    map_file = Path(map_path) if map_path else folder / "map.parquet"
    if map_file.is_file():
        table = pd.read_parquet(map_file) if map_file.suffix == ".parquet" else pd.read_csv(map_file)
        note = ""
    else:
        from atomarch.latent.maps import build_map

        if map_file.suffix not in (".parquet", ".csv"):
            raise AtomarchError(f"map file must end in .parquet or .csv, got {map_file}")
        print(f"[atomarch] no map at {map_file}: building it with atomarch.latent.maps.build_map "
              "(encodes the whole dataset; this takes a while)", file=sys.stderr)
        table = build_map(model)
        try:
            map_file.parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(map_file, index=False) if map_file.suffix == ".parquet" else table.to_csv(map_file, index=False)
            print(f"[atomarch] wrote the map to {map_file}", file=sys.stderr)
            note = " (built at start-up)"
        except OSError as exc:
            print(f"[atomarch] could not save the map ({exc}); using it in memory", file=sys.stderr)
            note = " (built at start-up, not saved)"
    return model, table, checkpoint_label(model), f"{map_file}{note}"


def run_explorer(ckpt: str | None = None, map_path: str | None = None, host: str = "127.0.0.1", port: int = 8050,
                 debug: bool = False) -> None:
    """Load the inputs and serve the app (blocks until interrupted). When ``checkpoints/`` holds
    other checkpoint folders with a map, the page gets a checkpoint selector and they are served
    by an :class:`ExplorerDispatcher` (each loaded on its first visit)."""
    if host not in LOCAL_HOSTS:
        print(f"warning: serving on {host} makes the Explorer reachable from other machines; it has no "
              "authentication and runs the model on any upload", file=sys.stderr)
    model, table, ckpt_label, map_label = load_inputs(ckpt, map_path)
    folder = checkpoint_path(ckpt)
    folder = (folder if folder.is_dir() else folder.parent).resolve()
    root = CHECKPOINTS_ROOT if CHECKPOINTS_ROOT.is_dir() else folder.parent
    choices = checkpoint_choices(root)
    default_name = next((n for n, d in choices.items() if d.resolve() == folder), f"{folder.name} (--ckpt)")
    if map_path:  # a map other than the folder's own: not the one the selector would load
        choices.pop(default_name, None)
    options = selector_options(choices, default_name)
    app = create_app(model, table, ckpt_label, map_label, selector={"options": options, "value": "/"})
    url = f"http://{'localhost' if host in LOCAL_HOSTS else host}:{port}/"
    print(f"[atomarch] Explorer on {url} ({len(table):,} points; Ctrl+C to stop)", file=sys.stderr)
    if len(options) < 2:
        app.run(host=host, port=port, debug=debug)
        return
    from werkzeug.serving import run_simple

    print(f"[atomarch] checkpoint selector: {', '.join(o['label'] for o in options)}", file=sys.stderr)
    if debug:
        app.enable_dev_tools(debug=True)
    run_simple(host, port, ExplorerDispatcher(app, default_name, choices, debug=debug), threaded=True,
               use_reloader=False, use_debugger=False)
