"""Pure functions building the Explorer's Plotly figures.

The map is a WebGL scatter (``go.Scattergl``) with one trace per dataset split (marker symbol by
split, colour by a property column), followed by a fixed list of overlay traces
(:data:`OVERLAY_SLOTS`: uploads, prior samples, interpolation path, optimisation trajectory,
picked points) that callbacks replace one at a time. Molecules are ``go.Scatter3d`` figures:
one marker per atom (CPK colours, size by covalent radius) and bond lines. Crystals (periodic
``ase.Atoms``) get :func:`crystal_figure`: the unit cell's 12 edges, its atoms with their
periodic images on the cell's faces, edges and corners, bonds by a distance rule across the
periodic boundaries, one legend entry per element; :func:`crystal_summary` gives the lattice
parameters, space group and formula shown beside it.

Coordinates: map ``x``/``y`` are the checkpoint's 2D projection of the latent means (unitless);
atom positions are in Å. Property values are in the dataset's physical units (QM9: eV).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

#: marker symbol of each dataset split on the map (other splits: "x")
SPLIT_SYMBOLS: dict[str, str] = {"train": "circle", "val": "diamond", "test": "square"}
#: overlay traces after the split traces, in this order: (slot, legend name)
OVERLAY_SLOTS: tuple[tuple[str, str], ...] = (
    ("upload", "uploaded"),
    ("samples", "prior samples"),
    ("path", "interpolation"),
    ("trajectory", "optimisation"),
    ("picks", "picked"),
)
#: CPK / Jmol-like colours by element symbol
CPK_COLORS: dict[str, str] = {
    "H": "#FFFFFF", "C": "#909090", "N": "#3050F8", "O": "#FF0D0D", "F": "#90E050", "P": "#FF8000",
    "S": "#FFFF30", "Cl": "#1FF01F", "Br": "#A62929", "I": "#940094", "B": "#FFB5B5", "Si": "#F0C8A0",
    "Li": "#CC80FF", "Na": "#AB5CF2", "K": "#8F40D4", "Mg": "#8AFF00", "Ca": "#3DFF00", "Fe": "#E06633",
}
DEFAULT_COLOR = "#FF1493"
MAP_TEMPLATE = "plotly_white"


def typed_array(values: np.ndarray) -> dict[str, str]:
    """A 1D numeric array as Plotly.js's base64 typed-array spec (``{"dtype", "bdata"}``), for
    :class:`dash.Patch` updates, which are serialised without plotly.py's array encoding."""
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))
    return {"dtype": "f4", "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}


# ------------------------------------------------------------------------------------------ map
def property_names(table: pd.DataFrame) -> list[str]:
    """Properties that have both a true and a predicted column (``p`` and ``pred_p``)."""
    return [c[5:] for c in table.columns if c.startswith("pred_") and c[5:] in table.columns]


def color_options(table: pd.DataFrame) -> list[dict[str, str]]:
    """Dropdown options for "colour by": true, predicted and error (pred - true) of every property,
    then the other numeric columns (``natoms``)."""
    opts: list[dict[str, str]] = []
    for p in property_names(table):
        opts += [{"label": p, "value": p}, {"label": f"predicted {p}", "value": f"pred_{p}"},
                 {"label": f"error {p} (pred - true)", "value": f"err_{p}"}]
    taken = {o["value"] for o in opts} | {"index", "id", "x", "y"}
    for c in table.columns:
        if c not in taken and pd.api.types.is_numeric_dtype(table[c]):
            opts.append({"label": c, "value": c})
    return opts


def color_values(table: pd.DataFrame, color_by: str | None) -> np.ndarray:
    """Values [n] (float32) of a colour column; ``err_<p>`` is ``pred_<p> - <p>``; NaN if unknown."""
    if color_by and color_by.startswith("err_") and color_by[4:] in table.columns and f"pred_{color_by[4:]}" in table.columns:
        p = color_by[4:]
        return (table[f"pred_{p}"].to_numpy(np.float64) - table[p].to_numpy(np.float64)).astype(np.float32)
    if color_by in table.columns and pd.api.types.is_numeric_dtype(table[color_by]):
        return table[color_by].to_numpy(np.float32)
    return np.full(len(table), np.nan, np.float32)


def color_range(values: np.ndarray, error: bool = False) -> tuple[float, float]:
    """Colour limits: the 1st-99th percentile of the finite values (symmetric about 0 for errors)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [1, 99]))
    if error:
        m = max(abs(lo), abs(hi), 1e-6)
        return -m, m
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def split_order(table: pd.DataFrame) -> list[str]:
    """Splits in map-trace order: train, val, test, then any other (sorted)."""
    present = [str(s) for s in pd.unique(table["split"])]
    return [s for s in SPLIT_SYMBOLS if s in present] + sorted(s for s in present if s not in SPLIT_SYMBOLS)


def split_rows(table: pd.DataFrame) -> list[np.ndarray]:
    """Per map trace (see :func:`split_order`), the table positions (iloc) of its points [n_k]."""
    split = table["split"].astype(str).to_numpy()
    return [np.flatnonzero(split == s) for s in split_order(table)]


def is_crystal_table(table: pd.DataFrame) -> bool:
    """Whether a map table lists crystals: it has a ``material_id`` column and no SMILES
    (:func:`atomarch.latent.maps.build_map` writes both columns, ``smiles`` empty for crystals)."""
    if "material_id" not in table.columns:
        return False
    return "smiles" not in table.columns or not table["smiles"].fillna("").astype(str).str.len().any()


def _hover(table: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-point hover text (molecules: SMILES and formula; crystals: material id, formula and,
    when the table has a ``space_group`` column, the space group), customdata [n, 2P] (true and
    predicted properties) and the hover template."""
    props = property_names(table)
    sub = table.iloc[rows]
    blank = pd.Series([""] * len(sub), index=sub.index, dtype=object)
    formula = sub["formula"].astype(str) if "formula" in sub else blank
    if is_crystal_table(table):
        parts = [sub["material_id"].astype(str), formula]
        if "space_group" in sub:
            parts.append("SG " + sub["space_group"].astype(str))
        text = parts[0].to_numpy(object)
        for part in parts[1:]:
            text = text + "  " + part.to_numpy(object)
        text = text.astype(str)
    else:
        smiles = sub["smiles"].astype(str) if "smiles" in sub else blank
        text = (smiles.to_numpy(object) + "  " + formula.to_numpy(object)).astype(str)
    cols = [c for p in props for c in (p, f"pred_{p}")]
    custom = sub[cols].to_numpy(np.float32) if cols else np.zeros((len(sub), 0), np.float32)
    lines = ["<b>%{text}</b>"] + [f"{p}: %{{customdata[{2 * k}]:.3f}} (pred %{{customdata[{2 * k + 1}]:.3f}})"
                                   for k, p in enumerate(props)]
    return text, custom, "<br>".join(lines) + "<extra>%{fullData.name}</extra>"


def map_figure(table: pd.DataFrame, color_by: str | None = None,
               overlays: dict[str, go.Scattergl] | None = None, title: str | None = None) -> go.Figure:
    """The latent map: one ``go.Scattergl`` per split, then one trace per overlay slot.

    Args:
        table: map table (columns ``split``, ``x``, ``y``; optional ``smiles``, ``formula``,
            properties ``p`` with predictions ``pred_p``), n rows.
        color_by: a column name, or ``err_<p>`` for pred - true; None: the first property.
        overlays: traces for some of :data:`OVERLAY_SLOTS` (missing slots get empty traces).
        title: figure title.

    Returns:
        figure with ``len(split_order(table)) + len(OVERLAY_SLOTS)`` traces; trace k < n_splits
        holds the rows ``split_rows(table)[k]`` in that order (a click's ``pointNumber`` indexes it).
    """
    props = property_names(table)
    if color_by is None:
        color_by = props[0] if props else None
    values = color_values(table, color_by)
    cmin, cmax = color_range(values, error=bool(color_by and color_by.startswith("err_")))
    n = len(table)
    size = 6 if n < 2000 else 4 if n < 30000 else 3
    fig = go.Figure()
    for k, (split, rows) in enumerate(zip(split_order(table), split_rows(table))):
        text, custom, template = _hover(table, rows)
        fig.add_trace(go.Scattergl(
            x=table["x"].to_numpy(np.float32)[rows], y=table["y"].to_numpy(np.float32)[rows], mode="markers",
            name=f"{split} ({len(rows)})", text=text, customdata=custom, hovertemplate=template,
            marker=dict(symbol=SPLIT_SYMBOLS.get(split, "x"), size=size, color=values[rows], colorscale="Viridis",
                        cmin=cmin, cmax=cmax, showscale=k == 0, opacity=0.8, line=dict(width=0),
                        colorbar=dict(title=dict(text=color_by or "", side="right"), thickness=12)),
        ))
    overlays = overlays or {}
    for slot, name in OVERLAY_SLOTS:
        fig.add_trace(overlays.get(slot) or empty_overlay(slot))
    fig.update_layout(
        template=MAP_TEMPLATE, title=dict(text=title) if title else None, uirevision="map", dragmode="zoom",
        margin=dict(l=40, r=10, t=40 if title else 10, b=40), hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0),
        xaxis=dict(title="map 1", zeroline=False), yaxis=dict(title="map 2", zeroline=False),
    )
    return fig


def empty_overlay(slot: str) -> go.Scattergl:
    """The placeholder trace of an overlay slot (no points, no legend entry)."""
    return go.Scattergl(x=[], y=[], mode="markers", name=dict(OVERLAY_SLOTS)[slot], showlegend=False)


def overlay_index(table: pd.DataFrame, slot: str) -> int:
    """Trace index of an overlay slot in :func:`map_figure` of ``table``."""
    return len(split_order(table)) + [s for s, _ in OVERLAY_SLOTS].index(slot)


def points_overlay(slot: str, xy: np.ndarray, refs: Sequence[str], labels: Sequence[str],
                   symbol: str = "star", color: str = "#d62728", size: int = 12) -> go.Scattergl:
    """Isolated points on the map (uploads, samples, picks).

    Args:
        slot: overlay slot name (legend name from :data:`OVERLAY_SLOTS`).
        xy: [k, 2] map coordinates (NaN rows are skipped by Plotly).
        refs: [k] structure references (customdata, read back on click).
        labels: [k] hover labels.
    """
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    return go.Scattergl(
        x=xy[:, 0], y=xy[:, 1], mode="markers", name=dict(OVERLAY_SLOTS)[slot], customdata=list(refs),
        text=list(labels), hovertemplate="%{text}<extra>%{fullData.name}</extra>", showlegend=len(xy) > 0,
        marker=dict(symbol=symbol, size=size, color=color, line=dict(width=1, color="black")),
    )


def path_overlay(slot: str, xy: np.ndarray, refs: Sequence[str], labels: Sequence[str],
                 valid: Sequence[bool] | None = None, color: str = "#ff7f0e") -> go.Scattergl:
    """A path on the map (interpolation, optimisation trajectory): one marker per frame joined by
    a line; invalid frames (``valid`` False) drawn as open markers.

    Args:
        xy: [k, 2] map coordinates of the k frames, in path order.
        refs, labels: [k] structure references (customdata) and hover labels.
        valid: [k] validity flags (default: all valid).
    """
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    ok = np.ones(len(xy), bool) if valid is None else np.asarray(valid, bool)
    return go.Scattergl(
        x=xy[:, 0], y=xy[:, 1], mode="lines+markers", name=dict(OVERLAY_SLOTS)[slot], customdata=list(refs),
        text=list(labels), hovertemplate="%{text}<extra>%{fullData.name}</extra>", showlegend=len(xy) > 0,
        line=dict(color=color, width=2),
        marker=dict(size=10, color=color, symbol=["circle" if v else "circle-open" for v in ok], line=dict(width=2, color=color)),
    )


# ------------------------------------------------------------------------------------ molecules
def element_color(symbol: str) -> str:
    """CPK colour of an element (hot pink for elements not in :data:`CPK_COLORS`)."""
    return CPK_COLORS.get(symbol, DEFAULT_COLOR)


def bond_pairs(atoms: Atoms) -> list[tuple[int, int, int]]:
    """Bonds to draw as (i, j, order): the project's EDM distance rule for H, C, N, O, F
    (:func:`atomarch.chem.bonds.bond_orders`), and for pairs with any other element a single
    bond when closer than 1.15 x the sum of covalent radii."""
    from atomarch.chem.bonds import bond_orders

    numbers, pos = atoms.get_atomic_numbers(), atoms.get_positions()
    if len(atoms) < 2:
        return []
    orders = bond_orders(numbers, pos)
    other = ~np.isin(numbers, [atomic_numbers[s] for s in ("H", "C", "N", "O", "F")])
    if other.any():
        r = covalent_radii[numbers]
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        near = (d < 1.15 * (r[:, None] + r[None])) & (other[:, None] | other[None])
        np.fill_diagonal(near, False)
        orders = np.where(near, np.maximum(orders, 1), orders)
    ii, jj = np.nonzero(np.triu(orders, 1))
    return [(int(i), int(j), int(orders[i, j])) for i, j in zip(ii, jj)]


def structure_figure(atoms: Atoms | None, title: str = "", uirevision: str = "structure", height: int = 360) -> go.Figure:
    """A molecule in 3D: one ``go.Scatter3d`` marker trace (one marker per atom, CPK colour, size
    by covalent radius) and one line trace per bond order (segments separated by None).

    The camera survives updates of the figure through ``uirevision``. ``atoms`` None or empty
    gives an empty scene with the title. A crystal (periodic on all three axes, see
    :func:`is_crystal`) is drawn by :func:`crystal_figure` instead.
    """
    if is_crystal(atoms):
        return crystal_figure(atoms, title, uirevision=uirevision, height=height)
    fig = go.Figure()
    if atoms is not None and len(atoms):
        pos = atoms.get_positions()
        symbols = atoms.get_chemical_symbols()
        for order, width in ((1, 5), (2, 9), (3, 13)):
            segs = [(i, j) for i, j, o in bond_pairs(atoms) if o == order]
            if not segs:
                continue
            xyz = np.full((3 * len(segs), 3), np.nan)
            for k, (i, j) in enumerate(segs):
                xyz[3 * k], xyz[3 * k + 1] = pos[i], pos[j]
            fig.add_trace(go.Scatter3d(
                x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", name=f"bonds ({order})", hoverinfo="skip",
                line=dict(color="#7f7f7f", width=width), showlegend=False, connectgaps=False,
            ))
        radii = covalent_radii[atoms.get_atomic_numbers()]
        fig.add_trace(go.Scatter3d(
            x=pos[:, 0], y=pos[:, 1], z=pos[:, 2], mode="markers", name="atoms", showlegend=False,
            text=[f"{s}{k}" for k, s in enumerate(symbols)],
            hovertemplate="%{text}<br>(%{x:.2f}, %{y:.2f}, %{z:.2f}) Å<extra></extra>",
            marker=dict(size=10 + 14 * radii, color=[element_color(s) for s in symbols], opacity=1.0,
                        line=dict(width=1, color="#333333")),
        ))
    fig.update_layout(
        title=dict(text=title, font=dict(size=12)), uirevision=uirevision, height=height,
        margin=dict(l=0, r=0, t=36, b=0), template=MAP_TEMPLATE, scene=scene_box(atoms),
    )
    return fig


def scene_box(atoms: Atoms | None, pad: float = 1.2) -> dict[str, Any]:
    """Scene settings with hidden axes spanning a cube around the molecule (centroid ± largest
    extent + ``pad`` Å), so the scale is fixed per molecule while the camera (kept by
    ``uirevision``) carries over between molecules."""
    if atoms is not None and len(atoms):
        pos = atoms.get_positions()
        if is_crystal(atoms):  # the whole cell in view
            pos = np.concatenate([pos, _cell_corners(np.asarray(atoms.get_cell(), float))])
            centre = 0.5 * (pos.min(0) + pos.max(0))
        else:
            centre = pos.mean(0)
        half = float(np.abs(pos - centre).max()) + pad
    else:
        centre, half = np.zeros(3), 3.0
    axes = {f"{c}axis": dict(visible=False, showbackground=False, range=[float(centre[k] - half), float(centre[k] + half)])
            for k, c in enumerate("xyz")}
    return dict(**axes, aspectmode="cube")


def grid_figure(frames: Sequence[Atoms | None], titles: Sequence[str], cols: int = 4, cell: int = 220) -> go.Figure:
    """A grid of small 3D views (one scene per molecule, ``cols`` per row)."""
    from plotly.subplots import make_subplots

    n = max(1, len(frames))
    rows = (n + cols - 1) // cols
    cols = min(cols, n)
    fig = make_subplots(rows=rows, cols=cols, specs=[[{"type": "scene"}] * cols for _ in range(rows)],
                        subplot_titles=list(titles) + [""] * (rows * cols - len(titles)),
                        horizontal_spacing=0.01, vertical_spacing=0.04)
    for k, atoms in enumerate(frames):
        r, c = divmod(k, cols)
        for trace in structure_figure(atoms).data:
            fig.add_trace(trace, row=r + 1, col=c + 1)
        fig.update_layout({f"scene{k + 1 if k else ''}": scene_box(atoms)})
    fig.update_annotations(font_size=11)
    fig.update_layout(height=rows * cell + 30, margin=dict(l=0, r=0, t=30, b=0), uirevision="grid",
                      template=MAP_TEMPLATE, showlegend=False)
    return fig


# ------------------------------------------------------------------------------------- crystals
#: Å: an atom closer than this to a cell face is drawn on the opposite face too
FACE_TOLERANCE = 0.05
#: crystals: a bond where two atoms are closer than this factor x the sum of their covalent radii
CRYSTAL_BOND_FACTOR = 1.2
#: spglib's symmetry tolerance (Å) for the space group shown beside a crystal
SYMPREC = 0.1
#: non-metals and metalloids: in a crystal that has any, two metals are never drawn bonded
#: (covalent radii of metals are large: 1.2 x their sum would join every cation pair of a salt)
NONMETALS = frozenset("H He B C N O F Ne Si P S Cl Ar Ge As Se Br Kr Sb Te I Xe At Rn".split())
#: the 12 edges of the unit cell, as pairs of corners (corner k has fractional coordinates
#: given by the bits of k: (k >> 2 & 1, k >> 1 & 1, k & 1))
CELL_EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(8) for j in range(i + 1, 8)
                                                if bin(i ^ j).count("1") == 1)


def is_crystal(atoms: Atoms | None) -> bool:
    """A non-empty structure periodic on all three axes with a cell of non-zero volume."""
    if atoms is None or len(atoms) == 0 or not bool(np.asarray(atoms.get_pbc(), dtype=bool).all()):
        return False
    return abs(float(np.linalg.det(np.asarray(atoms.get_cell(), dtype=float)))) > 1e-6


def element_color_any(symbol: str) -> str:
    """CPK colour of an element (:data:`CPK_COLORS`), else its Jmol colour (ase.data.colors), so
    that every element of a crystal has a distinct, conventional colour."""
    if symbol in CPK_COLORS:
        return CPK_COLORS[symbol]
    from ase.data.colors import jmol_colors

    z = atomic_numbers.get(symbol)
    if z is None or z >= len(jmol_colors):
        return DEFAULT_COLOR
    r, g, b = (int(round(255 * float(c))) for c in jmol_colors[z])
    return f"#{r:02X}{g:02X}{b:02X}"


def _cell_corners(cell: np.ndarray) -> np.ndarray:
    """The 8 corners [8, 3] (Å) of a cell [3, 3] (rows = lattice vectors), in :data:`CELL_EDGES` order."""
    frac = np.array([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)], dtype=float)
    return frac @ np.asarray(cell, dtype=float)


def cell_edges(cell: np.ndarray) -> np.ndarray:
    """The 12 edges [12, 2, 3] (Å) of a unit cell [3, 3] (rows = lattice vectors)."""
    corners = _cell_corners(cell)
    return np.stack([corners[[i, j]] for i, j in CELL_EDGES])


def periodic_images(atoms: Atoms, tol: float = FACE_TOLERANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The atoms to draw for a unit cell: every atom wrapped into the cell, plus its periodic
    images on the opposite faces when it lies within ``tol`` Å of a face (an atom on a face is
    drawn twice, on an edge 4 times, on a corner 8 times).

    Returns:
        index [m] (atom of each drawn point), offset [m, 3] (integer cell offset of the image;
        0 for the atom itself), frac [m, 3] (fractional coordinates of the drawn point, wrapped
        atoms in [0, 1) plus the offset).
    """
    import itertools

    cell = np.asarray(atoms.get_cell(), dtype=float)
    frac = atoms.get_scaled_positions(wrap=True)
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell).T, axis=1)  # distance between opposite faces
    tol_frac = tol / spacing
    index, offsets = [], []
    for i, f in enumerate(frac):
        options = [[0] + ([1] if f[d] < tol_frac[d] else []) + ([-1] if f[d] > 1.0 - tol_frac[d] else []) for d in range(3)]
        for off in itertools.product(*options):
            index.append(i)
            offsets.append(off)
    index_arr = np.asarray(index, dtype=np.int64)
    off_arr = np.asarray(offsets, dtype=np.int64).reshape(-1, 3)
    return index_arr, off_arr, frac[index_arr] + off_arr


def crystal_bonds(atoms: Atoms, index: np.ndarray, offset: np.ndarray,
                  factor: float = CRYSTAL_BOND_FACTOR) -> tuple[list[tuple[int, int]], list[tuple[int, np.ndarray]]]:
    """Bonds between the drawn points of :func:`periodic_images`: two atoms closer than
    ``factor`` x the sum of their covalent radii, periodic images included (ASE neighbour list),
    except metal-metal pairs in a crystal with non-metals (:data:`NONMETALS`).

    Returns:
        full [(p, q)]: bonds between two drawn points (p < q, each once);
        half [(p, v)]: bonds from drawn point p to an atom that is not drawn (across a face of
        the cell), as the vector v [3] (Å) to the bond's midpoint: drawn as a half bond.
    """
    from ase.neighborlist import neighbor_list

    wrapped = atoms.copy()
    wrapped.set_scaled_positions(atoms.get_scaled_positions(wrap=True))
    cutoffs = factor * covalent_radii[wrapped.get_atomic_numbers()]
    ii, jj, shifts, vecs = neighbor_list("ijSD", wrapped, cutoffs.tolist(), self_interaction=False)
    metal = np.array([s not in NONMETALS for s in wrapped.get_chemical_symbols()], dtype=bool)
    if not metal.all():  # a salt, oxide, ...: no cation-cation bonds
        keep = ~(metal[ii] & metal[jj])
        ii, jj, shifts, vecs = ii[keep], jj[keep], shifts[keep], vecs[keep]
    drawn = {(int(i), tuple(int(v) for v in off)): p for p, (i, off) in enumerate(zip(index, offset))}
    by_atom: dict[int, list[int]] = {}
    for k, i in enumerate(ii):
        by_atom.setdefault(int(i), []).append(k)
    full: set[tuple[int, int]] = set()
    half: list[tuple[int, np.ndarray]] = []
    for p, (i, off) in enumerate(zip(index, offset)):
        for k in by_atom.get(int(i), []):
            q = drawn.get((int(jj[k]), tuple(int(v) for v in shifts[k] + off)))
            if q is None:
                half.append((p, 0.5 * vecs[k]))
            elif q != p:
                full.add((min(p, q), max(p, q)))
    return sorted(full), half


def crystal_figure(atoms: Atoms | None, title: str = "", uirevision: str = "structure", height: int = 360) -> go.Figure:
    """A crystal's unit cell in 3D: the cell's 12 edges (trace ``cell``), its atoms with their
    periodic images on faces, edges and corners (:func:`periodic_images`; one marker trace per
    element, named by the element: the colour legend), and bonds by the distance rule of
    :func:`crystal_bonds` (trace ``bonds``; bonds leaving the cell drawn up to their midpoint).

    ``atoms`` None or empty gives an empty scene with the title; the camera survives updates
    through ``uirevision``.
    """
    fig = go.Figure()
    if is_crystal(atoms):
        cell = np.asarray(atoms.get_cell(), dtype=float)
        edges = cell_edges(cell)
        xyz = np.full((3 * len(edges), 3), np.nan)
        xyz[0::3], xyz[1::3] = edges[:, 0], edges[:, 1]
        fig.add_trace(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", name="cell", hoverinfo="skip",
                                   line=dict(color="#333333", width=3), showlegend=False, connectgaps=False))
        index, offset, frac = periodic_images(atoms)
        pos = frac @ cell
        full, half = crystal_bonds(atoms, index, offset)
        segs = [(pos[p], pos[q]) for p, q in full] + [(pos[p], pos[p] + v) for p, v in half]
        if segs:
            xyz = np.full((3 * len(segs), 3), np.nan)
            for k, (u, v) in enumerate(segs):
                xyz[3 * k], xyz[3 * k + 1] = u, v
            fig.add_trace(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", name="bonds", hoverinfo="skip",
                                       line=dict(color="#7f7f7f", width=5), showlegend=False, connectgaps=False))
        symbols = np.array(atoms.get_chemical_symbols())[index]
        for sym in dict.fromkeys(symbols.tolist()):
            sel = np.flatnonzero(symbols == sym)
            text = [f"{sym}{int(index[p])}" + (" (image)" if offset[p].any() else "")
                    + " · frac ({:.3f}, {:.3f}, {:.3f})".format(*frac[p]) for p in sel]
            radius = float(covalent_radii[atomic_numbers[sym]])
            fig.add_trace(go.Scatter3d(
                x=pos[sel, 0], y=pos[sel, 1], z=pos[sel, 2], mode="markers", name=sym, legendgroup=sym, showlegend=True,
                text=text, hovertemplate="%{text}<br>(%{x:.2f}, %{y:.2f}, %{z:.2f}) Å<extra></extra>",
                marker=dict(size=8 + 8 * radius, color=element_color_any(sym), opacity=1.0, line=dict(width=1, color="#333333")),
            ))
    fig.update_layout(
        title=dict(text=title, font=dict(size=12)), uirevision=uirevision, height=height,
        margin=dict(l=0, r=0, t=36, b=0), template=MAP_TEMPLATE, scene=scene_box(atoms if is_crystal(atoms) else None),
        legend=dict(orientation="h", yanchor="bottom", y=0.0, xanchor="left", x=0.0, font=dict(size=11),
                    itemclick="toggle", title=dict(text="")),
    )
    return fig


def crystal_summary(atoms: Atoms, symprec: float = SYMPREC) -> dict[str, Any]:
    """What the page shows beside a crystal: ``formula`` (reduced), ``formula_cell`` (this cell's),
    ``natoms``, lattice parameters ``a``, ``b``, ``c`` (Å), ``alpha``, ``beta``, ``gamma`` (°),
    ``volume`` (Å³), and the space group found by spglib (pymatgen's ``SpacegroupAnalyzer``,
    ``symprec`` Å): ``space_group`` (Hermann-Mauguin symbol) and ``space_group_number``, None
    when spglib finds none."""
    from ase.formula import Formula

    a, b, c, alpha, beta, gamma = (float(v) for v in atoms.cell.cellpar())
    out: dict[str, Any] = {
        "formula": Formula(atoms.get_chemical_formula()).reduce()[0].format("metal") if len(atoms) else "",
        "formula_cell": atoms.get_chemical_formula(), "natoms": len(atoms),
        "a": a, "b": b, "c": c, "alpha": alpha, "beta": beta, "gamma": gamma,
        "volume": abs(float(np.linalg.det(np.asarray(atoms.get_cell(), dtype=float)))),
        "space_group": None, "space_group_number": None,
    }
    if is_crystal(atoms):
        try:
            import warnings

            from pymatgen.io.ase import AseAtomsAdaptor
            from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sga = SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms), symprec=symprec)
                out["space_group"], out["space_group_number"] = sga.get_space_group_symbol(), int(sga.get_space_group_number())
        except Exception:  # spglib finds no symmetry for a degenerate cell: shown as n/a
            pass
    return out


def frame_label(atoms: Atoms, extra: dict[str, Any] | None = None) -> str:
    """One-line description of a structure: formula, then SMILES (molecules) or material id and
    decoded space group (crystals; from ``atoms.info``), then extras."""
    parts = [atoms.get_chemical_formula() if len(atoms) else "(empty)"]
    if is_crystal(atoms) or atoms.info.get("material_id"):
        if atoms.info.get("material_id"):
            parts.append(str(atoms.info["material_id"]))
        if atoms.info.get("space_group"):
            parts.append(f"SG {atoms.info['space_group']}")
    elif atoms.info.get("smiles"):
        parts.append(str(atoms.info["smiles"]))
    for k, v in (extra or {}).items():
        parts.append(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}")
    return " · ".join(parts)

