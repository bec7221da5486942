"""The model-side work behind the Explorer's callbacks, as plain methods.

:class:`Explorer` holds the model, the map table and every structure the page can show, named
by *references* (strings):

* ``row:<i>`` — row ``i`` (position, iloc) of the map table, i.e. a dataset molecule;
* ``<kind>:<token>:<k>`` — frame ``k`` of a computed result (``upload``, ``sample``, ``path``,
  ``traj``), kept in a bounded registry (oldest results are dropped first).

Model calls (reconstruction, interpolation, sampling, encoding uploads) are cached and bounded
in time: a call that has not finished after ``timeout`` seconds returns an error message to the
page while it completes in the background (and fills the cache). Optimisations run in
background threads polled through :meth:`Explorer.job`.

Everything a page sends is untrusted: references, numbers, names and uploads are checked here
and a bad value raises :class:`ExplorerError` (shown in the page), whose message quotes at most
a short prefix of the value (:func:`shown`).

Crystal models (a periodic decoder, ``model.decoder.periodic``) are served by the same methods:
structures are periodic ``ase.Atoms``; validity is CDVAE's structural and compositional validity
(:mod:`atomarch.metrics.crystals`) instead of RDKit sanitization; a reconstruction is judged by
pymatgen's StructureMatcher instead of SMILES; downloads are CIF or extxyz.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import math
import re
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from ase import Atoms

from apps.explorer.figures import frame_label, is_crystal_table, split_rows
from atomarch.errors import AtomarchError
from atomarch.latent.optimize import validity  # the project's one validity check (also optimize's)

T = TypeVar("T")

#: upload limits
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_UPLOAD_STRUCTURES = 100
MAX_UPLOAD_ATOMS = 500
UPLOAD_SUFFIXES = (".xyz", ".extxyz", ".sdf", ".cif")
#: request limits
MAX_STEPS = 50
MAX_SAMPLES = 64
MAX_OPT_STEPS = 2000
DOWNLOAD_FORMATS = ("xyz", "extxyz", "sdf")
#: download formats of a crystal model's structures
CRYSTAL_DOWNLOAD_FORMATS = ("cif", "extxyz")
INTERPOLATION_METHODS = ("slerp", "linear")
MAX_SEED = 2**31 - 1
#: a structure reference: ``row:<i>`` or ``<kind>:<token>:<k>`` (see the module docstring)
REF_PATTERN = re.compile(r"row:(\d{1,12})|(upload|sample|path|traj|recon):([A-Za-z0-9_-]{1,32}):(\d{1,6})")
MAX_REF_CHARS = 64
#: characters of a bad value quoted in an error message
SHOWN_CHARS = 40


class ExplorerError(AtomarchError):
    """A request the Explorer cannot serve; its message is shown in the page."""


def shown(value: Any, n: int = SHOWN_CHARS) -> str:
    """A bad value for an error message: ``repr`` of at most its first ``n`` characters."""
    text = value if isinstance(value, str) else repr(value)[: n + 1]
    return repr(text[:n] + ("…" if len(text) > n else ""))


def parse_ref(ref: Any) -> tuple[str, str, int]:
    """``(kind, token, k)`` of a structure reference (``("row", "", i)`` for ``row:<i>``);
    :class:`ExplorerError` for anything else."""
    m = REF_PATTERN.fullmatch(ref) if isinstance(ref, str) and len(ref) <= MAX_REF_CHARS else None
    if m is None:
        raise ExplorerError(f"not a structure reference: {shown(ref)} (expected 'row:<n>' or '<kind>:<id>:<n>')")
    if m.group(1) is not None:
        return "row", "", int(m.group(1))
    return m.group(2), m.group(3), int(m.group(4))


def as_int(value: Any, name: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] from a page input (int, integral float or digit string);
    :class:`ExplorerError` naming ``name`` otherwise."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,12}\s*", value):
        number = int(value)
    if number is None or not lo <= number <= hi:
        raise ExplorerError(f"{name} must be a whole number between {lo} and {hi}, got {shown(value)}")
    return number


def as_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; :class:`ExplorerError` otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise ExplorerError(f"{name} must be one of {', '.join(choices)}, got {shown(value)}")
    return value


@dataclass
class FrameSet:
    """Computed structures placed on the map.

    Attributes:
        kind: ``upload``, ``sample``, ``path`` or ``traj``.
        token: registry key; ``refs[k] == f"{kind}:{token}:{k}"``.
        frames: the k structures (``ase.Atoms``, Å).
        xy: [k, 2] map coordinates (NaN where a frame could not be placed).
        valid: [k] validity (molecules: perceived bonds sanitize in RDKit; crystals: structurally
            and compositionally valid, see :meth:`Explorer.validity`).
        labels: [k] one-line descriptions (hover text).
        values: extra per-frame columns, e.g. ``{"pred_gap": [k], "xtb_gap": [k]}``; for crystals
            also ``structure_valid`` and ``composition_valid`` (1.0 / 0.0).
    """

    kind: str
    token: str
    frames: list[Atoms]
    xy: np.ndarray
    valid: np.ndarray
    labels: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def refs(self) -> list[str]:
        return [f"{self.kind}:{self.token}:{k}" for k in range(len(self.frames))]

    def overlay(self) -> dict[str, Any]:
        """The JSON-able summary a ``dcc.Store`` keeps (no structures)."""
        xy = [[float(v) if np.isfinite(v) else None for v in row] for row in np.asarray(self.xy, float).reshape(-1, 2)]
        return {"kind": self.kind, "token": self.token, "xy": xy,
                "refs": self.refs, "labels": self.labels, "valid": self.valid.tolist(),
                "values": {k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in self.values.items()}}


@dataclass
class Job:
    """A background optimisation. ``status``: running, done or error."""

    id: str
    description: str
    started: float = field(default_factory=time.time)
    finished: float | None = None
    status: str = "running"
    result: FrameSet | None = None
    error: str | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started


def validity_text(structure_ok: bool, composition_ok: bool) -> str:
    """A crystal's validity in words: ``structure valid ✓ · composition valid ✗``."""
    return f"structure valid {'✓' if structure_ok else '✗'} · composition valid {'✓' if composition_ok else '✗'}"


def sha256_prefix(path: str | Path, n: int = 12) -> str:
    """First ``n`` hex digits of a file's SHA-256."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


class Explorer:
    """Model, map table and computed structures of one Explorer app.

    Args:
        model: a loaded VAE (``atomarch.load_model``) with a stored map projection.
        table: the map table (``atomarch map``), n rows; reindexed 0..n-1.
        datamodule: the model's data module (default: ``model.datamodule()``, built lazily),
            whose ``packed.atoms(index)`` gives a row's molecule.
        timeout: seconds a page request waits for a model call.
        max_results: computed frame sets kept in the registry.
    """

    def __init__(self, model: Any, table: pd.DataFrame, datamodule: Any = None, timeout: float = 60.0,
                 max_results: int = 64) -> None:
        self.model = model
        self.table = table.reset_index(drop=True)
        self._dm = datamodule
        self._dm_lock = threading.Lock()
        self.timeout = timeout
        self.max_results = max_results
        self.trace_rows = split_rows(self.table)
        self.properties: list[str] = list(getattr(model, "properties", []))
        #: a crystal model (periodic decoder): crystal views, validity, matching and file formats
        self.periodic = bool(getattr(getattr(model, "decoder", None), "periodic", False)) or is_crystal_table(self.table)
        self.download_formats: tuple[str, ...] = CRYSTAL_DOWNLOAD_FORMATS if self.periodic else DOWNLOAD_FORMATS
        self.results: OrderedDict[str, FrameSet] = OrderedDict()
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="explorer")
        self.has_xtb = not self.periodic and importlib.util.find_spec("tblite") is not None  # xTB judges molecules
        self._row_atoms = lru_cache(maxsize=4096)(self._load_row)
        self._reconstruction = lru_cache(maxsize=512)(self._reconstruct)
        self._path = lru_cache(maxsize=64)(self._interpolate)
        self._samples = lru_cache(maxsize=32)(self._sample)
        self._crystal_score = lru_cache(maxsize=512)(self._score_crystal)

    # ------------------------------------------------------------------------ structures
    @property
    def datamodule(self) -> Any:
        with self._dm_lock:  # built once, also when a click races the warm-up
            if self._dm is None:
                self._dm = self.model.datamodule()
        return self._dm

    def warm_up(self) -> None:
        """Load now what the first click needs: the data module and, for a crystal model,
        pymatgen's matcher and symmetry finder (seconds each). Synchronous on purpose: pymatgen
        cannot be imported by two threads at once (a half-initialised ``pymatgen.core``), so it is
        imported here, before the server's threads run. A data module that cannot be built is
        left for the click to report."""
        try:
            if self.periodic:
                import pymatgen.analysis.structure_matcher  # noqa: F401
                import pymatgen.io.ase  # noqa: F401
                import pymatgen.symmetry.analyzer  # noqa: F401
            _ = self.datamodule
        except Exception:  # pymatgen missing, dataset files not here: reported on the click
            pass

    def _load_row(self, pos: int) -> Atoms:
        if not 0 <= pos < len(self.table):
            raise ExplorerError(f"no map row {pos}")
        dm = self._row_datamodule(pos)
        atoms = dm.packed.atoms(int(self.table["index"].iat[pos]))
        atoms.info["source"] = f"{self.table['split'].iat[pos]} #{int(self.table['index'].iat[pos])}"
        return atoms

    def _row_datamodule(self, pos: int) -> Any:
        """The data module holding map row ``pos``: the model's own, or (maps built with
        ``atomarch map --also``) that of the row's ``dataset``, built once."""
        own = getattr(getattr(self.model, "cfg", None), "data", None)
        name = str(self.table["dataset"].iat[pos]) if "dataset" in self.table.columns else None
        if name is None or own is None or name == own.dataset:
            return self.datamodule
        with self._dm_lock:
            extra = self.__dict__.setdefault("_extra_dms", {})
            if name not in extra:
                from atomarch.latent.maps import other_datamodule

                extra[name] = other_datamodule(self.model, name)
            return extra[name]

    def validity(self, frames: Sequence[Atoms]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Validity [n] bool of structures and its parts. Molecules: the project's check
        (:func:`atomarch.latent.optimize.validity`, RDKit sanitization), no parts. Crystals:
        ``structure_valid`` (no two atoms closer than 0.5 Å, periodic images included) and
        ``composition_valid`` (SMACT charge neutrality + electronegativity) of
        :mod:`atomarch.metrics.crystals`, both [n] bool; valid when both hold."""
        if not self.periodic:
            return validity(frames)[0], {}
        from atomarch.metrics.crystals import composition_valid, structure_valid

        struct = np.array([len(a) > 0 and bool(structure_valid(a)) for a in frames], dtype=bool)
        comp = np.array([len(a) > 0 and bool(composition_valid(a)) for a in frames], dtype=bool)
        return struct & comp, {"structure_valid": struct, "composition_valid": comp}

    def _labelled(self, frames: Sequence[Atoms], prefixes: Sequence[str] | None = None,
                  extras: Sequence[dict[str, Any]] | None = None) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
        """Validity, one-line labels (prefix + :func:`frame_label` + validity) and the validity
        parts as float columns (for :attr:`FrameSet.values`) of computed frames."""
        valid, parts = self.validity(frames)
        labels = []
        for k, atoms in enumerate(frames):
            label = (prefixes[k] if prefixes else "") + frame_label(atoms, extras[k] if extras else None)
            if parts:
                label += " · " + validity_text(bool(parts["structure_valid"][k]), bool(parts["composition_valid"][k]))
            elif not valid[k]:
                label += " · invalid"
            labels.append(label)
        return valid, labels, {k: v.astype(float) for k, v in parts.items()}

    def row_of(self, ref: Any) -> int:
        """The map-table position of a ``row:<i>`` reference (:class:`ExplorerError` if it is
        not one or out of range)."""
        kind, _, pos = parse_ref(ref)
        if kind != "row":
            raise ExplorerError(f"not a map row: {shown(ref)}")
        if pos >= len(self.table):
            raise ExplorerError(f"no map row {pos} (the map has {len(self.table)} rows)")
        return pos

    def _result(self, ref: Any) -> tuple[FrameSet, int]:
        """The computed result and frame index a non-row reference names."""
        kind, token, k = parse_ref(ref)
        with self._lock:
            result = self.results.get(token)
        if result is None or result.kind != kind or k >= len(result.frames):
            raise ExplorerError(f"structure {shown(ref)} is no longer available; recompute it")
        return result, k

    def atoms(self, ref: Any) -> Atoms:
        """The molecule a reference names (see the module docstring)."""
        if parse_ref(ref)[0] == "row":
            return self._row_atoms(self.row_of(ref))
        result, k = self._result(ref)
        return result.frames[k]

    def label(self, ref: Any) -> str:
        """One-line description of a reference's molecule (:class:`ExplorerError` for a bad or
        unknown reference)."""
        if parse_ref(ref)[0] == "row":
            row = self.table.iloc[self.row_of(ref)]
            props = ", ".join(f"{p} {row[p]:.3f}" for p in self.properties if p in row)
            name = row.get("material_id", "") if self.periodic else row.get("smiles", "")
            return f"{name} · {row.get('formula', '')} · {row['split']} #{int(row['index'])}" + (f" · {props}" if props else "")
        result, k = self._result(ref)
        return f"{result.kind} {k}: {result.labels[k]}"

    def xy_of(self, ref: Any) -> tuple[float, float] | None:
        """Map coordinates of a reference (None if bad, unknown or not placed)."""
        try:
            if parse_ref(ref)[0] == "row":
                pos = self.row_of(ref)
                return float(self.table["x"].iat[pos]), float(self.table["y"].iat[pos])
            result, k = self._result(ref)
        except ExplorerError:
            return None
        xy = np.asarray(result.xy, float).reshape(-1, 2)
        if k >= len(xy) or not np.isfinite(xy[k]).all():
            return None
        return float(xy[k][0]), float(xy[k][1])

    def _register(self, result: FrameSet) -> FrameSet:
        with self._lock:
            self.results[result.token] = result
            self.results.move_to_end(result.token)
            while len(self.results) > self.max_results:
                self.results.popitem(last=False)
        return result

    def _bounded(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker pool, waiting at most ``self.timeout`` seconds."""
        fut = self._pool.submit(fn, *args)
        try:
            return fut.result(timeout=self.timeout)
        except FutureTimeout:
            raise ExplorerError(f"the model needs more than {self.timeout:.0f} s for this request; it goes on in the "
                                "background — repeat the request in a moment") from None

    def place(self, frames: Sequence[Atoms]) -> np.ndarray:
        """Map coordinates [n, 2] of molecules through the encoder; NaN rows for molecules the
        encoder rejects (e.g. an empty decoded molecule)."""
        xy = np.full((len(frames), 2), np.nan, np.float32)
        ok = [k for k, a in enumerate(frames) if len(a) > 0]
        if not ok:
            return xy
        try:
            xy[ok] = self.model.project(self.model.encode([frames[k] for k in ok]))
        except AtomarchError:
            for k in ok:  # one bad frame must not hide the others
                try:
                    xy[k] = self.model.project(self.model.encode([frames[k]]))[0]
                except AtomarchError:
                    pass
        return xy

    # ---------------------------------------------------------------------------- map events
    def ref_from_click(self, click_data: Any) -> str | None:
        """The reference of a clicked map point (``clickData`` of the map graph); None for
        anything that does not name a point."""
        points = click_data.get("points") if isinstance(click_data, dict) else None
        if not isinstance(points, list) or not points:
            return None
        return self._ref_of_point(points[0])

    def _ref_of_point(self, point: Any) -> str | None:
        if not isinstance(point, dict):
            return None
        try:
            curve = as_int(point.get("curveNumber", -1), "curveNumber", -1, 10**6)
            k = as_int(point.get("pointNumber", point.get("pointIndex", -1)), "pointNumber", -1, 10**9)
        except ExplorerError:
            return None
        if 0 <= curve < len(self.trace_rows):
            rows = self.trace_rows[curve]
            return f"row:{int(rows[k])}" if 0 <= k < len(rows) else None
        ref = point.get("customdata")
        if isinstance(ref, list):
            ref = ref[0] if ref else None
        try:
            parse_ref(ref)
        except ExplorerError:
            return None
        return ref

    def refs_from_selection(self, selected: Any) -> list[str]:
        """References of the points of a box/lasso selection (``selectedData``), deduplicated."""
        points = selected.get("points") if isinstance(selected, dict) else None
        if not isinstance(points, list) or not points:
            return []
        refs = (self._ref_of_point(p) for p in points)
        return list(dict.fromkeys(r for r in refs if r))

    def selection_table(self, refs: Sequence[str]) -> pd.DataFrame:
        """One row per reference: map-table columns for dataset rows, the computed values for
        others (bad or unavailable references are left out)."""
        if not isinstance(refs, (list, tuple)):
            raise ExplorerError(f"a selection is a list of structure references, got {shown(refs)}")
        rows_pos = []
        for r in refs:
            try:
                rows_pos.append(self.row_of(r))
            except ExplorerError:
                continue
        parts = []
        if rows_pos:
            df = self.table.iloc[rows_pos].copy()
            df.insert(0, "ref", [f"row:{p}" for p in rows_pos])
            parts.append(df)
        others = [r for r in refs if isinstance(r, str) and not r.startswith("row:")]
        if others:
            recs = []
            for ref in others:
                try:
                    atoms = self.atoms(ref)
                except ExplorerError:
                    continue
                rec = {"ref": ref, "split": ref.split(":")[0], "natoms": len(atoms), "formula": atoms.get_chemical_formula()}
                if self.periodic:
                    rec.update(material_id=str(atoms.info.get("material_id", "")), space_group=atoms.info.get("space_group"))
                else:
                    rec["smiles"] = str(atoms.info.get("smiles", ""))
                rec.update({f"pred_{p}": atoms.info[p] for p in self.properties if isinstance(atoms.info.get(p), float)})
                recs.append(rec)
            parts.append(pd.DataFrame(recs))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["ref"])

    # -------------------------------------------------------------------------- structure
    def _reconstruct(self, ref: str) -> Atoms:
        return self.model.reconstruct([self.atoms(ref)])[0]

    def reconstruction(self, ref: str) -> tuple[Atoms, dict[str, Any]]:
        """Reconstruction of a structure through the model (cached) and its scores.

        Molecules: ``{"rmsd": heavy-atom RMSD in Å or None, "smiles": original SMILES,
        "smiles_recon": ..., "match": bool}``. SMILES are RDKit canonical; "match" means the same
        molecule (mirror images count as one, as for ``atomarch reconstruct``).

        Crystals: ``{"match": bool, "rms": float or None, "formula", "formula_recon",
        "structure_valid", "composition_valid"}``: pymatgen's StructureMatcher verdict under
        CDVAE's tolerances (:func:`atomarch.metrics.crystals.structure_match`; RMS displacement
        normalised by (V / N)^(1/3), None when not matched) and the reconstruction's validity."""
        atoms = self.atoms(ref)
        if self.periodic:
            return self._bounded(self._crystal_score, ref)
        from atomarch.chem.strings import canonical_smiles, molecule_key
        from atomarch.metrics.reconstruction import heavy_atom_rmsd

        recon = self._bounded(self._reconstruction, ref)
        k0 = molecule_key(atoms) if len(atoms) else None
        k1 = molecule_key(recon) if len(recon) else None
        s0 = canonical_smiles(atoms.info["smiles"]) if atoms.info.get("graph_smiles") else k0
        s1 = recon.info.get("smiles") or k1
        rmsd = heavy_atom_rmsd(atoms, recon) if len(recon) else None
        return recon, {"rmsd": rmsd, "smiles": s0, "smiles_recon": s1, "match": k0 is not None and k0 == k1}

    def _score_crystal(self, ref: str) -> tuple[Atoms, dict[str, Any]]:
        from atomarch.metrics.crystals import structure_match

        atoms, recon = self.atoms(ref), self._reconstruction(ref)
        match, rms = structure_match(atoms, recon) if len(recon) else (False, None)
        valid, parts = self.validity([recon])
        return recon, {"match": bool(match), "rms": rms, "formula": atoms.get_chemical_formula(),
                       "formula_recon": recon.get_chemical_formula() if len(recon) else "",
                       "structure_valid": bool(parts["structure_valid"][0]),
                       "composition_valid": bool(parts["composition_valid"][0])}

    # ------------------------------------------------------------------------ interpolation
    def _interpolate(self, ref_a: str, ref_b: str, steps: int, method: str) -> FrameSet:
        from atomarch.latent.paths import latent_path

        a, b = self.atoms(ref_a), self.atoms(ref_b)
        za, zb = self.model.encode([a, b])
        xy = self.model.project(latent_path(za, zb, steps, method))
        frames = self.model.interpolate(za, zb, steps=steps, method=method)  # the latents above: no second encoding
        valid, labels, values = self._labelled(frames, [f"t={k / max(1, steps - 1):.2f} · " for k in range(len(frames))])
        return FrameSet("path", uuid.uuid4().hex[:10], frames, xy, valid, labels, values)

    def interpolate(self, ref_a: str, ref_b: str, steps: int = 10, method: str = "slerp") -> FrameSet:
        """Decoded latent path of ``steps`` frames from A to B (cached) with its map positions
        (the projected latent path itself) and validity flags."""
        if not ref_a or not ref_b:
            raise ExplorerError("pick two points first (click a point, then 'Set as A' / 'Set as B')")
        steps = as_int(steps or 0, "steps", 2, MAX_STEPS)
        method = as_choice(method, "the interpolation method", INTERPOLATION_METHODS)
        self.atoms(ref_a), self.atoms(ref_b)  # both must name available structures
        return self._register(self._bounded(self._path, ref_a, ref_b, steps, method))

    # ----------------------------------------------------------------------------- sampling
    def _sample(self, n: int, seed: int) -> FrameSet:
        frames = self.model.sample(n, seed=seed)
        valid, labels, values = self._labelled(frames)
        return FrameSet("sample", uuid.uuid4().hex[:10], frames, self.place(frames), valid, labels, values)

    def sample(self, n: int, seed: int = 0) -> FrameSet:
        """``n`` prior samples (cached by (n, seed)), placed on the map by re-encoding them."""
        n = as_int(n or 0, "the number of samples", 1, MAX_SAMPLES)
        seed = as_int(seed or 0, "the seed", 0, MAX_SEED)
        return self._register(self._bounded(self._samples, n, seed))

    # ------------------------------------------------------------------------------- upload
    def upload(self, filename: str, contents: str) -> FrameSet:
        """Read a ``dcc.Upload`` file (``contents`` = ``data:...;base64,<data>``), check it and
        place its structures on the map. Raises :class:`ExplorerError` with a message for the page."""
        from atomarch.data.structures import check_structures, read_structures

        if not isinstance(contents, str) or (filename is not None and not isinstance(filename, str)):
            raise ExplorerError("an upload is a file name and its base64 data URL")
        name = Path(filename or "upload").name
        if len(name) > 80:
            name = name[:60] + "…" + name[-12:]
        suffix = Path(name).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:  # a molecule given to a crystal model (and vice versa) is refused below
            raise ExplorerError(f"{name}: unsupported file type; upload {', '.join(UPLOAD_SUFFIXES)}")
        payload = (contents or "").partition(",")[2]
        if len(payload) * 3 // 4 > MAX_UPLOAD_BYTES:
            raise ExplorerError(f"{name} is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ExplorerError(f"{name}: the upload is not valid base64 data") from None
        if not data.strip():
            raise ExplorerError(f"{name} is empty")
        with tempfile.TemporaryDirectory(prefix="atomarch-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                frames = read_structures(path)
                for k, atoms in enumerate(frames):
                    atoms.info["source"] = f"{name}:{k}"
                if len(frames) > MAX_UPLOAD_STRUCTURES:
                    raise ExplorerError(f"{name} holds {len(frames)} structures; the limit is {MAX_UPLOAD_STRUCTURES}")
                big = [k for k, a in enumerate(frames) if len(a) > MAX_UPLOAD_ATOMS]
                if big:
                    raise ExplorerError(f"{name}: structure {big[0]} has {len(frames[big[0]])} atoms; "
                                        f"the limit is {MAX_UPLOAD_ATOMS}")
                check_structures(frames, self.model.elements)
                self.model.check_inputs(frames)  # the model's own refusals: a crystal to a molecule model and vice versa
            except ExplorerError:
                raise
            except AtomarchError as exc:
                raise ExplorerError(str(exc).replace(str(path), name)) from None
        xy = self._bounded(self.place, frames)
        valid, labels, values = self._labelled(frames, [f"{name}:{k} · " for k in range(len(frames))])
        if not self.periodic:  # as before: no "invalid" mark on uploaded molecules
            labels = [f"{name}:{k} · " + frame_label(a) for k, a in enumerate(frames)]
        return self._register(FrameSet("upload", uuid.uuid4().hex[:10], frames, xy, valid, labels, values))

    # ------------------------------------------------------------------------- optimisation
    def start_optimization(self, ref: str, prop: str, direction: str = "max", steps: int = 100,
                           decode_every: int = 10) -> str:
        """Start ``model.optimize([atoms(ref)], {prop: direction}, ...)`` in a background thread;
        returns the job id for :meth:`job`."""
        if not ref:
            raise ExplorerError("pick a start point first (click a point on the map)")
        if not isinstance(prop, str) or prop not in self.properties:
            raise ExplorerError(f"unknown property {shown(prop)}; the model predicts {', '.join(self.properties)}")
        direction = as_choice(direction, "the direction", ("max", "min"))
        steps = as_int(steps or 0, "steps", 1, MAX_OPT_STEPS)
        decode_every = as_int(decode_every or 0, "'decode every'", 1, MAX_OPT_STEPS)
        start = self.atoms(ref)
        job = Job(uuid.uuid4().hex[:10], f"{direction} {prop} from {self.label(ref)}")
        self.jobs[job.id] = job

        def work() -> None:
            try:
                job.result = self._optimize(start, prop, direction, steps, decode_every)
                job.status = "done"
            except Exception as exc:  # reported in the page
                job.error, job.status = f"{type(exc).__name__}: {exc}" if not isinstance(exc, AtomarchError) else str(exc), "error"
            finally:
                job.finished = time.time()

        threading.Thread(target=work, name=f"optimize-{job.id}", daemon=True).start()
        return job.id

    def _optimize(self, start: Atoms, prop: str, direction: str, steps: int, decode_every: int) -> FrameSet:
        traj = self.model.optimize([start], {prop: direction}, steps=steps, decode_every=decode_every)
        frames = list(traj.structures[0])
        xy = self.model.project(traj.latents[0])
        values = {f"pred_{prop}": np.asarray(traj.predicted[prop][0], float)}
        if self.has_xtb:
            from atomarch.chem.oracles import XTBOracle

            values["xtb_gap"] = np.asarray(XTBOracle()(frames)["xtb_gap"], float)
        extras = [{"step": traj.steps[r], **{k: float(v[r]) for k, v in values.items()}} for r in range(len(frames))]
        if self.periodic:  # traj.valid is the molecule check; crystals are judged as crystals
            valid, labels, parts = self._labelled(frames, extras=extras)
            values.update(parts)
        else:
            valid = np.asarray(traj.valid[0], bool)
            labels = [frame_label(atoms, extra) + ("" if valid[r] else " · invalid")
                      for r, (atoms, extra) in enumerate(zip(frames, extras))]
        return self._register(FrameSet("traj", uuid.uuid4().hex[:10], frames, xy, valid, labels, values))

    def job(self, job_id: str) -> Job:
        """A background optimisation by id."""
        if not isinstance(job_id, str) or job_id not in self.jobs:
            raise ExplorerError(f"unknown optimisation job {shown(job_id)}")
        return self.jobs[job_id]

    # ---------------------------------------------------------------------------- downloads
    def structures_file(self, refs: Sequence[str], fmt: str) -> bytes:
        """The structures of ``refs`` written as ``xyz``, ``extxyz`` or ``sdf`` (molecules) or
        ``cif``, ``extxyz`` (crystals; :attr:`download_formats`) by
        :func:`atomarch.data.structures.write_structures`, as bytes. Structures without atoms
        are left out."""
        from atomarch.data.structures import write_structures

        fmt = as_choice(fmt, "the download format", self.download_formats)
        if not isinstance(refs, (list, tuple)):
            raise ExplorerError(f"a download is a list of structure references, got {shown(refs)}")
        frames = []
        for ref in refs:
            atoms = self.atoms(ref).copy()
            atoms.info = {k: v for k, v in atoms.info.items() if isinstance(v, (int, float, str, bool)) and v is not None}
            atoms.info["ref"] = ref
            if len(atoms):
                frames.append(atoms)
        if not frames:
            raise ExplorerError("nothing to download (no non-empty structure)")
        with tempfile.TemporaryDirectory(prefix="atomarch-download-") as tmp:
            path = Path(tmp) / f"structures.{fmt}"
            write_structures(frames, path)
            return path.read_bytes()

    def reconstruction_file(self, ref: str, fmt: str) -> bytes:
        """The reconstruction of ``ref`` as a structure file (see :meth:`structures_file`)."""
        recon, _ = self.reconstruction(ref)
        token = uuid.uuid4().hex[:10]
        self._register(FrameSet("recon", token, [recon], np.full((1, 2), np.nan), np.ones(1, bool), [frame_label(recon)]))
        return self.structures_file([f"recon:{token}:0"], fmt)
