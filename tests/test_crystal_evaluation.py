"""CDVAE's generation protocol for crystals: fingerprints, COV-R/COV-P, Wasserstein distances,
uniqueness and novelty on hand-made crystals with known answers; the crystal branch of
``evaluate_model`` / ``atomarch evaluate`` and the crystal table of ``atomarch reconstruct`` on a
tiny trained crystal VAE."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, make_supercell

pytest.importorskip("pymatgen")
pytest.importorskip("matminer")
pytest.importorskip("pyxtal")

from atomarch.metrics import crystals as C  # noqa: E402

from conftest import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = Path(__file__).with_name("data") / "crystals"


def _perovskite(a: str = "Sr", b: str = "Ti", x: str = "O", lattice: float = 3.905) -> Atoms:
    return Atoms(f"{a}{b}{x}3", cell=np.eye(3) * lattice, pbc=True,
                 scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def _moved(atoms: Atoms, seed: int = 0) -> Atoms:
    """The same crystal: atoms permuted, translated and wrapped."""
    rng = np.random.default_rng(seed)
    out = atoms[rng.permutation(len(atoms))]
    out.positions += rng.normal(size=3)
    out.wrap()
    return out


@pytest.fixture(scope="module")
def perovskites() -> list[Atoms]:
    return [_perovskite("Sr", "Ti"), _perovskite("Ba", "Ti", lattice=4.0), _perovskite("Ca", "Zr", lattice=4.02)]


@pytest.fixture(scope="module")
def perovskite_fps(perovskites):
    return C.crystal_fingerprints(perovskites, progress=False)


# ------------------------------------------------------------------------------ fingerprints
def test_fingerprints_shapes_scaling_and_cache(tmp_path, perovskites, monkeypatch):
    cache = C.FingerprintCache(tmp_path / "fp.jsonl")
    fps = C.crystal_fingerprints(perovskites + [Atoms(cell=np.eye(3), pbc=True)], cache, progress=False)
    assert fps.structure.shape == (4, 61) and fps.composition.shape == (4, 132)
    assert fps.ok.tolist() == [True, True, True, False] and fps.computed == 4  # the empty cell has none
    # the same crystal in another setting has the same fingerprints
    again = C.crystal_fingerprints([_moved(perovskites[0])], progress=False)
    assert np.allclose(again.structure[0], fps.structure[0], atol=1e-8)
    assert np.allclose(again.composition[0], fps.composition[0])
    # CDVAE's fixed Magpie scaler: its own means map to 0, NaN (missing element data) to 0
    means, stds = C.composition_scaler()
    assert len(means) == len(stds) == 132 and (stds > 0).all()
    raw = means.copy()
    raw[0] = np.nan
    assert np.allclose(C.scale_composition(raw[None]), 0.0)
    # a second run reads every CrystalNN fingerprint from the file
    reread = C.crystal_fingerprints(perovskites, C.FingerprintCache(tmp_path / "fp.jsonl"), progress=False)
    assert reread.computed == 0 and np.array_equal(reread.structure, fps.structure[:3])
    # CrystalNN raising = a missing fingerprint (as in CDVAE), cached as such
    class Broken:
        def featurize(self, structure, i):
            raise ValueError("no neighbours")

        def feature_labels(self):
            return ["x"] * 61

    monkeypatch.setattr(C, "_crystalnn_fingerprint", lambda: Broken())
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    failed = C.crystal_fingerprints([nacl], cache, progress=False)
    assert not failed.ok[0] and np.isnan(failed.structure[0]).all() and not np.isnan(failed.composition[0]).any()
    # a line cut short by a killed run is skipped, and later entries still append cleanly
    with (tmp_path / "fp.jsonl").open("a") as f:
        f.write('{"k": "cut-sh')
    reloaded = C.FingerprintCache(tmp_path / "fp.jsonl")
    assert len(reloaded.data) == 5 and reloaded.get(next(iter(reloaded.data))) is not None
    reloaded.put("extra", None)
    reloaded.flush()
    assert "extra" in C.FingerprintCache(tmp_path / "fp.jsonl")


# ---------------------------------------------------------------------------------- coverage
def test_coverage_identical_and_far_off_sets(perovskites, perovskite_fps):
    cut = C.COV_CUTOFFS["perov5"]
    same = C.coverage(perovskite_fps, perovskite_fps, cut["struc"], cut["comp"])
    assert same["cov_recall"] == 1.0 and same["cov_precision"] == 1.0 and same["amsd_recall"] == pytest.approx(0.0)
    carbon = [bulk("C", "diamond", a=3.567), Atoms("C2", cell=[[2.46, 0, 0], [-1.23, 2.13, 0], [0, 0, 6.7]], pbc=True,
                                                     scaled_positions=[[0, 0, 0.25], [1 / 3, 2 / 3, 0.25]])]
    far = C.coverage(C.crystal_fingerprints(carbon, progress=False), perovskite_fps, cut["struc"], cut["comp"])
    assert far["cov_recall"] == 0.0 and far["cov_precision"] == 0.0
    assert far["amcd_precision"] > cut["comp"]


def test_coverage_counts_unfingerprinted_samples_and_uses_separate_minima():
    means, _ = C.composition_scaler()
    ref = C.CrystalFingerprints(np.zeros((2, 3)), np.tile(means, (2, 1)), np.array([True, True]))
    struc = np.zeros((4, 3))
    struc[1, 0], struc[2, 0] = 0.1, 0.3  # within / beyond struc cutoff 0.2 of the references
    gen = C.CrystalFingerprints(struc, np.tile(means, (4, 1)), np.array([True, True, True, False]))
    cov = C.coverage(gen, ref, struc_cutoff=0.2, comp_cutoff=4.0)
    assert cov["cov_recall"] == 1.0
    assert cov["cov_precision"] == pytest.approx(2 / 4)  # rows 0 and 1; the unfingerprinted row counts as a miss
    assert cov["n_generated"] == 4 and cov["n_generated_fingerprinted"] == 3
    # COV-R asks only for *some* sample near in structure and *some* near in composition
    comp = np.tile(means, (2, 1))
    comp[1] += 10 * C.composition_scaler()[1]  # far in composition
    struc2 = np.array([[1.0, 0, 0], [0, 0, 0]])  # row 0: far in structure, near in composition
    split = C.coverage(C.CrystalFingerprints(struc2, comp, np.array([True, True])), ref, 0.2, 4.0)
    assert split["cov_recall"] == 1.0 and split["cov_precision"] == 0.0


# ----------------------------------------------------------------------- property statistics
def test_density_and_wasserstein(perovskites):
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    from pymatgen.io.ase import AseAtomsAdaptor

    assert C.crystal_density(nacl) == pytest.approx(AseAtomsAdaptor.get_structure(nacl).density, rel=1e-6)
    assert C.crystal_density(nacl) == pytest.approx(2.164, abs=2e-3)
    same = C.property_wasserstein(perovskites, list(reversed(perovskites)))
    assert same == {"wasserstein_density": 0.0, "wasserstein_n_elements": 0.0}
    diamond = bulk("C", "diamond", a=3.567)
    assert C.crystal_density(diamond) == pytest.approx(3.516, abs=2e-3)
    w = C.property_wasserstein([perovskites[0]], [diamond])
    assert w["wasserstein_n_elements"] == 2.0  # one value each: the distance is their difference
    assert w["wasserstein_density"] == pytest.approx(C.crystal_density(perovskites[0]) - C.crystal_density(diamond))
    assert C.property_wasserstein([], perovskites)["wasserstein_density"] is None


# ------------------------------------------------------------------- uniqueness and novelty
def test_uniqueness_of_duplicates(perovskites):
    sr = perovskites[0]
    frames = [sr, _moved(sr, 1), bulk("NaCl", "rocksalt", a=5.64), make_supercell(sr, np.diag([2, 1, 1])),
              _perovskite("Sr", "Ti", lattice=3.905 * 1.3)]  # isotropic scaling is normalised away
    res = C.uniqueness(frames, progress=False)
    assert res["unique"] == [True, False, True, False, False] and res["uniqueness"] == pytest.approx(2 / 5)
    assert res["comparisons"] == 3  # NaCl is never compared with a perovskite
    assert C.formula_key(frames[3]) == C.formula_key(sr) == (("O", 3), ("Sr", 1), ("Ti", 1))


def test_novelty_against_a_training_set(perovskites):
    train = [_moved(perovskites[0], 2), bulk("NaCl", "rocksalt", a=5.64), make_supercell(perovskites[2], np.eye(3) * 2)]
    index = C.CrystalIndex(train)
    distorted = perovskites[1].copy()
    distorted.set_cell(np.diag([4.0, 4.0, 4.0 * 1.5]), scale_atoms=True)  # BaTiO3 not in train anyway
    res = C.novelty(perovskites + [distorted], index, progress=False)
    assert res["novel"] == [False, True, False, True] and res["novelty"] == 0.5
    assert res["comparisons"] == 2  # only the same-formula training crystals are compared
    assert index.find(bulk("NaCl", "rocksalt", a=5.64, cubic=True)) == 1


def test_generation_summary_on_the_reference_itself(perovskites, perovskite_fps, tmp_path):
    samples = perovskites + [Atoms("Sr2", cell=np.eye(3) * 5, pbc=True, scaled_positions=[[0, 0, 0], [0.02, 0, 0]])]
    res = C.evaluate_crystal_generation(samples, perovskites, train=perovskites[:1], cutoffs=C.COV_CUTOFFS["perov5"],
                                        cache=C.FingerprintCache(tmp_path / "fp.jsonl"),
                                        reference_fingerprints=perovskite_fps, progress=False)
    assert res["structural_validity"] == 0.75 and res["n_valid"] == 3  # Sr2 atoms 0.1 Å apart
    assert res["cov_recall"] == 1.0 and res["cov_valid_only"] == {"cov_recall": 1.0, "cov_precision": 1.0}
    assert res["wasserstein_density"] == pytest.approx(0.0) and res["wasserstein_n_elements"] == 0.0
    assert res["uniqueness"] == 1.0 and res["novelty"] == pytest.approx(2 / 3)
    assert res["valid_unique_novel"] == pytest.approx(2 / 4)
    assert res["per_sample"]["valid"] == [True, True, True, False]


def test_cdvae_rows_and_cutoffs_are_complete():
    for name in ("perov5", "carbon24", "mp20"):
        assert set(C.COV_CUTOFFS[name]) == {"struc", "comp"}
        assert C.CDVAE_PUBLISHED[name]["match_rate"] > 0.4
    assert C.COV_CUTOFFS["mp20"] == {"struc": 0.4, "comp": 10.0}
    assert C.CDVAE_PUBLISHED["carbon24"]["compositional_validity"] is None


# --------------------------------------------------------------- a tiny trained crystal VAE
@pytest.fixture(scope="module")
def tiny_crystal_ckpt(tiny_crystal_vae_run) -> Path:
    """The session's tiny crystal VAE (conftest): a working checkpoint, not a good one."""
    return tiny_crystal_vae_run / "checkpoints" / "last.ckpt"


def test_evaluate_crystal_vae_end_to_end(tiny_crystal_ckpt, tmp_path, capsys):
    from atomarch.cli import main

    out = tmp_path / "eval.json"
    code = main(["evaluate", "--ckpt", str(tiny_crystal_ckpt), "-n", "4", "--reference", "8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.read_text())
    assert result["kind"] == "crystal" and result["dataset"] == "perov5"
    assert result["label"] == "atomarch (reduced-train)"
    rec, gen = result["reconstruction"], result["generation"]
    assert rec["n"] == 4 and 0.0 <= rec["match_rate"] <= rec["match_rate_any"] <= 1.0
    assert rec["seconds_per_crystal"] > 0 and rec["matcher"] == {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
    assert gen["n"] == 4 and gen["reference_n"] == 8 and gen["cov_cutoffs"] == {"struc": 0.2, "comp": 4.0}
    for key in ("structural_validity", "compositional_validity", "validity", "cov_recall", "cov_precision"):
        assert 0.0 <= gen[key] <= 1.0, key
    assert {"wasserstein_density", "wasserstein_n_elements", "uniqueness", "novelty"} <= set(gen)
    assert result["cdvae_published"]["match_rate"] == 0.9752
    assert "heat_ref" in result["properties"]["mae"]
    txt = out.with_suffix(".txt").read_text()
    for fragment in ("atomarch (reduced-train)", "CDVAE (paper)", "97.52 %", "COV-R", "Wasserstein density",
                     "uniqueness (of valid)", "novelty (of valid, vs train)"):
        assert fragment in txt and fragment in printed, fragment
    # the fingerprints went to the model's cache folder
    cache_dir = tiny_crystal_ckpt.parents[2] / "cache"
    assert list(cache_dir.glob("crystal-fingerprints-*.jsonl"))


def test_evaluate_generation_only_from_the_fitted_prior(tiny_crystal_ckpt, tmp_path, capsys):
    """--reconstruct 0 skips the reconstructions; --prior fitted draws the samples from the
    aggregate posterior stored by export; the JSON records both and the decode settings."""
    from atomarch.cli import main

    exported = tmp_path / "model.ckpt"
    assert main(["export", "--ckpt", str(tiny_crystal_ckpt), "--out", str(exported)]) == 0
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--ckpt", str(exported), "-n", "3", "--reference", "6", "--reconstruct", "0",
                 "--prior", "fitted", "--temperature", "0.7", "--compositions", "2", "--beams", "4",
                 "--skeletons", "3", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["reconstruction"]["n"] == 0 and "match_rate" not in result["reconstruction"]
    assert result["generation"]["n"] == 3 and result["generation"]["prior"] == "fitted"
    assert result["generation"]["temperature"] == 0.7
    assert result["decode"]["compositions"] == 2 and result["decode"]["beams"] == 4
    assert result["decode"]["skeletons"] == 3
    txt = out.with_suffix(".txt").read_text()
    assert "skipped (--reconstruct 0)" in txt and "fitted aggregate posterior, temperature 0.7" in txt
    capsys.readouterr()


def test_reconstruct_prints_a_crystal_table(tiny_crystal_ckpt, tmp_path, capsys):
    from ase.io import write

    from atomarch.cli import main
    from atomarch.data.crystals import read_crystal_csv

    frames = read_crystal_csv(TINY / "perov_5" / "val.csv", ["heat_ref"], progress=False)[:2]
    paths = []
    for k, atoms in enumerate(frames):
        paths.append(str(tmp_path / f"in{k}.cif"))
        write(paths[-1], atoms)
    code = main(["reconstruct", "--ckpt", str(tiny_crystal_ckpt), *paths, "--out", str(tmp_path / "rec.extxyz")])
    out = capsys.readouterr().out
    assert code == 0
    lines = [l for l in out.splitlines() if " -> " in l]
    assert len(lines) == 2
    for line in lines:
        assert "match: " in line and "SMILES" not in line
        source, decoded = line.split(" -> ")
        assert re.search(r"\w+ \(\S+, \d+\)$", source), line  # input: formula (space group symbol, number)
        assert re.match(r"\w+ \((\S+, \d+|space group \?)\)|\(nothing decoded\)", decoded), line
    assert "matched (StructureMatcher stol=0.5, angle_tol=10, ltol=0.3" in out and " of 2 (" in out


def test_crystal_reconstruction_table_on_known_pairs(perovskites):
    from atomarch.cli import format_reconstruction

    sr = perovskites[0]
    rattled = _moved(sr, 3)
    rattled.rattle(0.03, seed=1)
    table = format_reconstruction([sr, sr, perovskites[1]], [rattled, perovskites[1], Atoms(cell=np.eye(3), pbc=True)])
    lines = table.splitlines()
    assert "SrTiO3 (Pm-3m, 221) -> SrTiO3 (" in lines[0] and "match: yes  RMS 0.0" in lines[0]
    assert "SrTiO3 (Pm-3m, 221) -> BaTiO3 (Pm-3m, 221)  match: no" in lines[1] and "RMS" not in lines[1]
    assert "-> (nothing decoded)  match: no" in lines[2]
    assert lines[3].endswith("1 of 3 (33.3 %)")
