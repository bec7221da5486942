"""What a new user hits first: one canonical SMILES per molecule, honest tables, refusals and
out-of-domain warnings instead of confident nonsense, fast errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from atomarch.cli import main


# ------------------------------------------------------------------------ SMILES identity
def test_canonical_and_mirror_canonical_smiles():
    from atomarch.chem.strings import canonical_smiles, mirror_canonical

    assert canonical_smiles("C1=CC=CC=C1") == canonical_smiles("c1ccccc1") == "c1ccccc1"
    assert canonical_smiles("C1=CC=NC=C1") == "c1ccncc1"
    assert canonical_smiles("OCC") == "CCO"
    # enantiomers share one key; diastereomers do not
    assert mirror_canonical("C[C@H](N)C(=O)O") == mirror_canonical("C[C@@H](N)C(=O)O")
    assert mirror_canonical("C/C=C/C") != mirror_canonical("C/C=C\\C")
    assert mirror_canonical("not a smiles") is None


def test_aromatic_rings_perceived_from_3d(qm9):
    """QM9's benzene (id 214) and pyridine (215): the EDM distance rule reads their 1.39 Å bonds as
    single bonds and RDKit then fills in hydrogens (cyclohexane); the skeleton targets must not."""
    from atomarch.chem.strings import stereo_smiles

    position = {int(i): k for k, i in enumerate(qm9.ids.tolist())}
    assert stereo_smiles(qm9.atoms(position[214])) == "c1ccccc1"
    assert stereo_smiles(qm9.atoms(position[215])) == "c1ccncc1"
    assert stereo_smiles(qm9.atoms(position[3])) == "O"


def test_from_smiles_keeps_canonical_input_and_graph():
    from atomarch.chem.strings import molecule_key
    from atomarch.data.structures import from_smiles

    a = from_smiles("C1=CC=CC=C1")
    assert a.info["smiles"] == "c1ccccc1" and a.info["graph_smiles"] == "c1ccccc1"
    b = from_smiles("OC(F)C")  # a stereocentre the input leaves open: the graph has the embedded one
    assert "@" in b.info["graph_smiles"] and molecule_key(b) == molecule_key(from_smiles("C[C@@H](O)F"))


# ---------------------------------------------------------------------- decoder levels
def test_decoded_smiles_canonical_and_levels_agree(tiny_vae, qm9_atoms):
    from atomarch.chem.strings import canonical_smiles

    frames = tiny_vae.reconstruct(qm9_atoms[:6], seed=0)
    for a in frames:
        assert a.info["smiles"] == canonical_smiles(a.info["smiles"])
        comp = tiny_vae.decoder.composition_of(a.info["smiles"])
        formula = tiny_vae.decoder._formula(comp)
        # the flag is honest: it says whether the decoded composition is the global level's
        assert a.info["levels_agree"] == (formula == a.info["formula_global"])
        if a.info["levels_agree"]:
            assert Atoms(formula).get_chemical_formula() == a.get_chemical_formula()


def test_compositions_are_ranked_by_probability(tiny_vae, qm9_atoms):
    import torch

    z = torch.as_tensor(tiny_vae.encode(qm9_atoms[:4]))
    comps, logp = tiny_vae.decoder.compositions(z, 5)
    assert comps.shape[:2] == (4, 5) and bool((logp[:, :-1] >= logp[:, 1:] - 1e-6).all())
    assert torch.equal(comps[:, 0], tiny_vae.decoder.predicted_counts(z))
    # the log-probability is the sum of the per-element count heads'
    lp = torch.log_softmax(tiny_vae.decoder.global_level(z), -1)
    manual = lp.gather(2, comps[:, 1].unsqueeze(-1)).squeeze(-1).sum(-1)
    assert torch.allclose(manual, logp[:, 1], atol=1e-5)


# --------------------------------------------------------------------- crystals refused
def test_periodic_structure_refused_by_molecule_models(tiny_model, tiny_vae, tmp_path, capsys):
    from atomarch.errors import StructureError

    diamond = bulk("C", "diamond", a=3.567)
    for model in (tiny_model, tiny_vae):
        with pytest.raises(StructureError, match="periodic.*molecule model"):
            model.predict([diamond])
    cif = tmp_path / "diamond.cif"
    diamond.write(cif)
    ckpt = tiny_vae.checkpoint_path
    rc = main(["reconstruct", "--ckpt", ckpt, str(cif), "--out", str(tmp_path / "r.cif")])
    err = capsys.readouterr().err
    assert rc == 2 and "diamond.cif:0) is periodic" in err and "Traceback" not in err
    assert not (tmp_path / "r.cif").exists()


# ------------------------------------------------------------------ out-of-domain flags
def _chain(n: int) -> Atoms:
    pos = [[1.26 * i, 0.44 * (i % 2), 0.0] for i in range(n)]
    return Atoms("C" * n, positions=pos)


def test_domain_reasons_and_latent_threshold():
    from atomarch.latent.domain import Domain

    dom = Domain(min_atoms=3, max_atoms=29, max_heavy=9)
    assert dom.reasons(Atoms("H")) == ["no heavy (non-hydrogen) atom", "1 atoms (trained on at least 3)"]
    assert "12 heavy atoms (trained on at most 9)" in dom.reasons(_chain(12))
    assert dom.reasons(Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])) == []
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 4))
    dom.fit_latents(train)
    inside = [dom.reasons(Atoms("OH2", positions=np.eye(3)), z) for z in train[:1000]]
    assert sum(bool(r) for r in inside) <= 5  # ~0.1 % of training latents are outside
    far = dom.reasons(Atoms("OH2", positions=np.eye(3)), np.full(4, 10.0))
    assert far and far[0].startswith("latent far from the training data")


def test_predict_table_units_and_domain_flags(tiny_model, tmp_path, capsys):
    import pandas as pd

    chain = tmp_path / "chain.xyz"
    _chain(40).write(chain)
    out = tmp_path / "p.csv"
    rc = main(["predict", "--ckpt", tiny_model.checkpoint_path, str(chain), "CCO", "[H]", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["source", "formula"] + [f"{p} [eV]" for p in tiny_model.properties] + ["in_domain"]
    assert df["in_domain"].tolist() == [False, True, False]
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "40 heavy atoms" in warnings[0] and "no heavy" in warnings[1]
    # values are the API's
    api = tiny_model.predict([__import__("ase.io").io.read(chain)])["gap"]
    assert df["gap [eV]"][0] == pytest.approx(float(api[0]), rel=1e-5)


# ------------------------------------------------------------------ reconstruct table
def test_reconstruct_prints_one_line_per_structure_and_summary(tiny_vae, tmp_path, capsys):
    from atomarch.chem.strings import molecule_key
    from atomarch.data.structures import read_structures

    out = tmp_path / "rec.extxyz"
    rc = main(["reconstruct", "--ckpt", tiny_vae.checkpoint_path, "CCO", "c1ccccc1", "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    rows = [line for line in lines if "same molecule:" in line and "->" in line]
    assert len(rows) == 2 and "CCO ->" in rows[0] and "c1ccccc1 ->" in rows[1]
    decoded = read_structures(out)
    from atomarch.data.structures import from_smiles

    truth = [molecule_key(from_smiles("CCO")) == molecule_key(decoded[0]),
             molecule_key(from_smiles("c1ccccc1")) == molecule_key(decoded[1])]
    assert [("same molecule: yes" in r) for r in rows] == truth
    summary = next(line for line in lines if line.startswith("same molecule:"))
    assert summary.startswith(f"same molecule: {sum(truth)} of 2")


# ------------------------------------------------------------------- optimize best row
def test_best_row_is_chosen_by_the_oracle_when_one_ran():
    from atomarch.latent.optimize import Term, Trajectory

    S, R = 1, 3
    traj = Trajectory(steps=[0, 1, 2], latents=np.zeros((S, R, 2)), structures=[[Atoms("C")] * R],
                      predicted={"gap": np.array([[1.0, 9.0, 5.0]])}, valid=np.ones((S, R), bool),
                      smiles=[["C"] * R], objective=[Term("gap", "max")])
    score, judge = traj.scores()
    assert judge == "head" and int(traj.best_valid(score)[0]) == 1
    traj.oracle = {"xtb_gap": np.array([[2.0, 3.0, 7.0]]), "xtb_energy": np.zeros((S, R))}
    score, judge = traj.scores()
    assert judge == "oracle" and int(traj.best_valid(score)[0]) == 2
    from atomarch.cli import format_trajectory

    text = format_trajectory(traj)
    assert "chosen by the oracle (xtb_gap)" in text
    assert [line for line in text.splitlines() if line.endswith("(best)")][0].split()[1] == "2"


def test_optimize_start_row_is_the_reconstruction(tiny_vae, qm9_atoms):
    traj = tiny_vae.optimize(qm9_atoms[:2], "gap:max", steps=2, decode_every=1, seed=3)
    rec = tiny_vae.reconstruct(qm9_atoms[:2], seed=3)
    for s in range(2):
        assert traj.smiles[s][0] == rec[s].info["smiles"]
        assert np.allclose(traj.structures[s][0].positions, rec[s].positions)


# ---------------------------------------------------------------------------- start-up
def test_errors_before_loading_torch(tmp_path):
    """A missing checkpoint or an empty argument is reported without importing torch (the
    ~5 s part of start-up)."""
    code = ("import sys; from atomarch.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    for args, message in ((["encode", "--ckpt", "missing", "x.xyz", "--out", "z.npy"], "checkpoint not found: missing"),
                          (["predict", "--ckpt", "checkpoints/qm9-property", ""], "input argument 1 is empty"),
                          (["predict", "--ckpt", "checkpoints/qm9-property", "nothere.xyz"], "file not found: nothere.xyz")):
        res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                             cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip() == f"error: {message}" or message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def test_sdf_title_line_is_the_smiles(tmp_path):
    from atomarch.data.structures import from_smiles, write_structures

    path = tmp_path / "m.sdf"
    write_structures([from_smiles("CCO")], path)
    assert path.read_text().splitlines()[0] == "CCO"
