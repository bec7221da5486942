"""Crystals end to end: the intensive encoder's latent does not depend on the choice of cell; the
symmetry decoder's grammar writes only complete skeletons with the composition asked for; its
targets rebuild the crystal; a tiny crystal VAE trains, decodes deterministically and refuses
molecules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, make_supercell

pytest.importorskip("pyxtal")

from atomarch.chem.symmetry import (  # noqa: E402
    SkeletonTokens,
    build,
    constrain_lattice,
    from_free,
    group_info,
    perceive,
    primitive_counts,
)
from atomarch.config import config_from_dict  # noqa: E402
from atomarch.data.graph import batch_from_atoms  # noqa: E402
from atomarch.errors import StructureError  # noqa: E402
from atomarch.metrics.crystals import structure_match  # noqa: E402
from atomarch.models.net import AtomarchNet  # noqa: E402

from conftest import random_rotation, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = Path(__file__).with_name("data") / "crystals"
ELEMENTS = ["C", "O", "Na", "Cl", "Ti", "Sr", "Ba"]


def _net(pooling: str = "mean", decoder: bool = True, seed: int = 0) -> AtomarchNet:
    torch.manual_seed(seed)
    cfg = {"data": {"dataset": "perov5", "properties": ["heat_ref"], "cutoff": 4.0},
           "model": {"elements": ELEMENTS, "latent_dim": 16,
                     "encoder": {"irreps_hidden": "16x0e+8x1o+4x2e", "num_layers": 2, "hidden": 32, "pooling": pooling},
                     "decoder": {"enabled": decoder, "kind": "symmetry", "max_count": 8, "gru_hidden": 32,
                                 "gru_layers": 1, "token_dim": 16, "max_length": 20, "relax": "none",
                                 "beams": 8, "compositions": 2}}}
    return AtomarchNet(cfg, {"heat_ref": {"mean": 0.0, "std": 1.0}}).eval()


def _latent(net: AtomarchNet, frames: list[Atoms]) -> np.ndarray:
    with torch.no_grad():
        return net.encoder(batch_from_atoms(frames, net.cutoff))[0].double().numpy()


def _perovskite() -> Atoms:
    return Atoms("SrTiO3", cell=np.eye(3) * 3.905, pbc=True,
                 scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def _cell_choices(prim: Atoms, conv: Atoms, rng: np.random.Generator) -> list[Atoms]:
    """The same crystal as conventional cell, Niggli cell, 2x2x1 supercell, with atoms
    permuted / translated and wrapped, and rotated."""
    from pymatgen.io.ase import AseAtomsAdaptor

    niggli = AseAtomsAdaptor.get_atoms(AseAtomsAdaptor.get_structure(conv).get_reduced_structure("niggli"))
    sup = make_supercell(prim, [[2, 0, 0], [0, 2, 0], [0, 0, 1]])
    moved = sup[rng.permutation(len(sup))]
    moved.positions += rng.normal(size=3) * 3.0
    moved.wrap()
    rotated = conv.copy()
    rotated.set_cell(conv.cell[:] @ random_rotation(rng).T, scale_atoms=True)
    return [conv, niggli, sup, moved, rotated]


@pytest.mark.parametrize("name", ["diamond", "rocksalt", "perovskite"])
def test_latent_invariant_to_cell_choice(name):
    rng = np.random.default_rng(1)
    if name == "diamond":
        prim, conv = bulk("C", "diamond", a=3.567), bulk("C", "diamond", a=3.567, cubic=True)
    elif name == "rocksalt":
        prim, conv = bulk("NaCl", "rocksalt", a=5.64), bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    else:
        prim = _perovskite()
        conv = make_supercell(prim, np.eye(3) * 2)  # a cubic 2x2x2 "conventional" choice
    net = _net()
    ref = _latent(net, [prim])[0]
    others = _latent(net, _cell_choices(prim, conv, rng))
    rel = np.linalg.norm(others - ref, axis=1) / np.linalg.norm(ref)
    assert rel.max() < 1e-4, rel


def test_sum_pooling_is_not_cell_invariant():
    """The molecule readout (sum and mean) changes with a supercell: the control for the test above."""
    net = _net(pooling="sum_mean", decoder=False)
    prim = bulk("C", "diamond", a=3.567)
    a, b = _latent(net, [prim, make_supercell(prim, np.eye(3) * 2)])
    assert np.linalg.norm(a - b) / np.linalg.norm(a) > 1e-3


def test_tokens_round_trip_and_grammar():
    vocab = SkeletonTokens(ELEMENTS)
    ids = vocab.encode(225, [("Cl", "b"), ("Na", "a")], 10)
    assert vocab.decode(ids) == (225, [("Cl", "b"), ("Na", "a")])
    assert vocab.encode(225, [("Xe", "a")], 10) is None  # unknown element
    assert vocab.encode(1, [("C", "a")] * 10, 10) is None  # too long
    assert vocab.decode([vocab.index["Na"], vocab.index["@a"]]) is None  # no space group first
    assert vocab.decode([vocab.sg0, vocab.index["Na"]]) is None  # an element without its letter


def test_lattice_constraints_and_counts():
    assert constrain_lattice((4.0, 4.2, 4.4, 91, 89, 92), 225) == (4.2, 4.2, 4.2, 90.0, 90.0, 90.0)
    a, b, c, al, be, ga = constrain_lattice((3.0, 3.2, 5.0, 90, 90, 118), 194)
    assert a == b == pytest.approx(3.1) and (al, be, ga) == (90.0, 90.0, 120.0)
    assert constrain_lattice((3, 4, 5, 80, 100, 70), 14)[3:] == (90.0, 100.0, 90.0)
    assert primitive_counts(225, [("Na", "a"), ("Cl", "b")]) == {"Na": 1, "Cl": 1}  # F centring: 4 → 1
    assert group_info(166).centering == 3
    with pytest.raises(StructureError, match="no Wyckoff position"):
        primitive_counts(1, [("C", "b")])


@pytest.mark.parametrize("atoms", [bulk("C", "diamond", a=3.567), _perovskite(),
                                   Atoms("Ti2O4", cell=[4.59, 4.59, 2.96], pbc=True,  # rutile: O at 4f (x, x, 0)
                                         scaled_positions=[[0, 0, 0], [.5, .5, .5], [.305, .305, 0], [.695, .695, 0],
                                                           [.805, .195, .5], [.195, .805, .5]])])
def test_every_representative_rebuilds_the_crystal(atoms):
    """The coordinate loss takes the nearest of an orbit's representatives: each must rebuild it."""
    sk = perceive(atoms)
    assert all(sk.free_sets[j][0] == sk.free[j] for j in range(len(sk.orbits)))
    for j, reps in enumerate(sk.free_sets):
        for rep in reps:
            free = list(sk.free)
            free[j] = rep
            rebuilt = build(from_free(sk.space_group, sk.orbits, sk.lattice, free))
            assert structure_match(atoms, rebuilt)[0], (sk.tokens, j, rep)


def test_beam_search_writes_only_complete_skeletons_of_the_asked_composition(monkeypatch):
    """An untrained decoder (random logits) still writes only grammatical skeletons: letters the
    group has, canonical orbit order, fixed positions once, exactly the composition asked for."""
    net = _net(seed=3)
    dec = net.decoder
    wanted = [{"Na": 1, "Cl": 1}, {"Sr": 1, "Ti": 1, "O": 3}, {"C": 2}, {"Ba": 2, "Ti": 2, "O": 6}]
    comps = torch.tensor([[[w.get(s, 0) for s in dec.symbols]] for w in wanted])  # [G, 1, T]
    monkeypatch.setattr(dec, "compositions", lambda z, k, min_ratio=1e-3, **kw: (comps, torch.zeros(len(wanted), 1)))
    torch.manual_seed(0)
    cands = dec.candidates(torch.randn(len(wanted), 16), beams=16, n_compositions=1)
    assert sum(len(rows) for rows in cands) >= 10  # random logits: some beams walk into dead ends
    for g, rows in enumerate(cands):
        for _, rank, ids in rows:
            sg, orbits = dec.vocab.decode(ids)
            assert primitive_counts(sg, orbits) == wanted[g]
            assert orbits == sorted(orbits, key=lambda o: (o[0], o[1]))  # canonical order (element, then letter)
            fixed = [letter for _, letter in orbits if group_info(sg).positions[letter][1] == 0]
            assert len(fixed) == len(set(fixed))
        built = dec.realize(torch.randn(len(rows), 16), [ids for _, _, ids in rows]) if rows else []
        assert all(a is None or sorted(a.get_chemical_symbols()) == sorted(
            s for s, n in wanted[g].items() for _ in range(n)) for a, _ in built)


def test_skeletons_per_composition_sets_the_verified_candidates(monkeypatch):
    """``per_composition`` keeps the k most likely skeletons of each proposed composition (by
    joint log-probability, distinct), the default ceil(beams / compositions); negative is refused."""
    net = _net(seed=3)
    dec = net.decoder
    wanted = [{"Sr": 1, "Ti": 1, "O": 3}, {"Ba": 2, "Ti": 2, "O": 6}]
    comps = torch.tensor([[[w.get(s, 0) for s in dec.symbols] for w in wanted]])  # [1, 2, T]
    monkeypatch.setattr(dec, "compositions", lambda z, k, min_ratio=1e-3, **kw: (comps, torch.tensor([[-0.1, -2.0]])))
    z = torch.randn(1, 16, generator=torch.Generator().manual_seed(0))
    full = dec.candidates(z, beams=16, n_compositions=2, per_composition=16)[0]
    for per, expect in ((0, 8), (1, 1), (3, 3)):
        rows = dec.candidates(z, beams=16, n_compositions=2, per_composition=per)[0]
        for rank in (0, 1):
            mine = [c for c in rows if c[1] == rank]
            assert mine == [c for c in full if c[1] == rank][: min(expect, len(mine))]
            assert len(mine) == min(expect, sum(c[1] == rank for c in full))
        assert [c[0] for c in rows] == sorted((c[0] for c in rows), reverse=True)
        assert len({tuple(c[2]) for c in rows}) == len(rows)
    from atomarch.nn.decoders import DecodeOptions

    with pytest.raises(ValueError, match="skeletons per composition"):
        dec.decode(z, DecodeOptions(skeletons=-1))


def test_charge_balanced_decoding_proposes_only_smact_valid_compositions(monkeypatch):
    """``charge_balanced``: the proposed compositions are the most likely of the global level's
    list that pass SMACT (in the same order), a latent with none keeps the unscreened list, and
    decoded crystals carry a passing composition."""
    from atomarch.metrics.crystals import counts_valid
    from atomarch.nn.decoders import DecodeOptions

    assert counts_valid(["Na", "Cl"], [1, 1]) and counts_valid(["Sr", "Ti", "O"], [1, 1, 3])
    assert not counts_valid(["Na", "Cl"], [2, 1]) and not counts_valid(["Na", "O"], [0, 0])
    net = _net(seed=3)
    dec = net.decoder
    listed = [{"Na": 2, "Cl": 1}, {"Sr": 1, "Ti": 1, "O": 3}, {"Ba": 1, "Cl": 1}, {"Na": 1, "Cl": 1},
              {"Ba": 1, "O": 1}, {"Ti": 1, "Cl": 7}]
    rows = torch.tensor([[[w.get(s, 0) for s in dec.symbols] for w in listed]] * 2)  # [2, 6, T]
    lp = torch.tensor([[-0.1, -0.5, -0.7, -1.0, -1.5, -2.0]] * 2)
    rows[1, :, :] = torch.tensor([{"Na": 2, "Cl": 1}.get(s, 0) for s in dec.symbols])  # latent 1: none passes

    def top_k(z, k):
        return rows[:, :k], lp[:, :k]

    monkeypatch.setattr(dec.global_level, "top_k", top_k)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    plain, plain_lp = dec.compositions(z, 3)
    assert plain.tolist() == rows[:, :3].tolist()
    comps, clp = dec.compositions(z, 2, charge_balanced=True)
    passing = [k for k, w in enumerate(listed) if counts_valid(list(w), list(w.values()))]
    assert passing[:2] == [1, 3]  # SrTiO3, NaCl; Na2Cl and BaCl fail
    assert comps[0].tolist() == rows[0, passing[:2]].tolist() and clp[0].tolist() == lp[0, passing[:2]].tolist()
    assert comps[1].tolist() == rows[1, :2].tolist()  # nothing passes: unscreened
    out = dec.decode(z[:1], DecodeOptions(charge_balanced=True, beams=8, compositions=2), encode=None)
    if len(out[0]):
        symbols, counts = np.unique(out[0].get_chemical_symbols(), return_counts=True)
        assert counts_valid(symbols.tolist(), counts.tolist())


def test_symmetry_decoder_refuses_molecular_relaxation():
    from atomarch.errors import ConfigError

    cfg = {"data": {"dataset": "perov5", "properties": ["heat_ref"]},
           "model": {"elements": ELEMENTS, "decoder": {"enabled": True, "kind": "symmetry", "relax": "mmff"}}}
    with pytest.raises(ConfigError, match="'chgnet' or 'none'"):
        AtomarchNet(cfg, {"heat_ref": {"mean": 0.0, "std": 1.0}})
    assert config_from_dict(cfg).model.decoder.kind == "symmetry"


# ------------------------------------------------------------------ a tiny trained crystal VAE
@pytest.fixture(scope="module")
def tiny_crystal_vae(tiny_crystal_vae_run):
    """The session's tiny crystal VAE (conftest, 6 epochs on the 20-row Perov-5 copy)."""
    import atomarch

    model = atomarch.load_model(tiny_crystal_vae_run / "checkpoints" / "last.ckpt")
    model.run_dir = tiny_crystal_vae_run
    return model


def test_tiny_crystal_vae_decodes_periodic_structures_deterministically(tiny_crystal_vae):
    model = tiny_crystal_vae
    dm = model.datamodule(root=str(TINY))
    frames = [dm.packed.atoms(int(k)) for k in dm.split["train"][:4]]
    a = model.reconstruct(frames)
    b = model.reconstruct(frames[2:3])  # alone: the same crystal as in the batch of four
    assert all(x.pbc.all() and abs(x.cell.volume) > 1 for x in a if len(x))
    assert len(a[2]) == len(b[0]) and np.allclose(a[2].cell[:], b[0].cell[:], atol=1e-5)
    assert np.allclose(a[2].positions, b[0].positions, atol=1e-5)
    assert {"skeleton", "space_group", "structure_valid", "heat_ref"} <= set(a[0].info)
    samples = model.sample(3, seed=1)
    assert len(samples) == 3 and all(s.pbc.all() for s in samples if len(s))


def test_crystal_model_refuses_molecules_and_unknown_elements(tiny_crystal_vae):
    no = Atoms("NO", positions=[[0, 0, 0], [0, 0, 1.15]])  # elements the model knows, but no cell
    with pytest.raises(StructureError, match="not periodic"):
        tiny_crystal_vae.encode([no])
    with pytest.raises(StructureError, match="not trained on"):
        tiny_crystal_vae.encode([bulk("Xe", "fcc", a=6.2)])


def test_compact_state_resumes_training(tiny_crystal_vae, tmp_path):
    """A run's last.ckpt packed for committing (float16 weights, 8-bit second moments) resumes on
    a clean machine: same step counter, weights within float16 precision, training goes on."""
    from atomarch.models.loading import read_checkpoint

    last = tiny_crystal_vae.run_dir / "checkpoints" / "last.ckpt"
    state = tmp_path / "state.pt"
    res = run_cli("pack-state", "--ckpt", str(last), "--out", str(state))
    assert res.returncode == 0, res.stderr[-2000:]
    assert state.stat().st_size < 0.5 * last.stat().st_size
    full, packed = read_checkpoint(last), read_checkpoint(state)
    assert packed["global_step"] == full["global_step"]
    res = run_cli("train", "--config", str(ROOT / "configs/tiny_crystal_vae.yaml"), f"train.out_dir={tmp_path / 'runs'}",
                  f"data.root={TINY}", f"data.cache_dir={tmp_path / 'cache'}", f"train.max_epochs={full['epoch'] + 3}",
                  "--resume", str(state))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "expanded the compact state" in res.stdout
    resumed = read_checkpoint(tmp_path / "runs" / "tiny_crystal_vae" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] > full["global_step"]
    assert resumed["epoch"] >= full["epoch"] + 2


def test_polar_crystals_get_an_anchored_origin():
    """In a polar group (tetragonal BaTiO3, P4mm) the origin along z is free: the skeleton's free
    coordinates must not depend on where the input's origin was, or no decoder could learn them."""
    from atomarch.chem.symmetry import polar_axes

    assert polar_axes(99) == (2,) and polar_axes(1) == (0, 1, 2) and polar_axes(221) == ()
    bto = Atoms("BaTiO3", cell=[3.99, 3.99, 4.03], pbc=True,
                scaled_positions=[[0, 0, 0.02], [0.5, 0.5, 0.535], [0.5, 0.5, 0.005], [0.5, 0, 0.49], [0, 0.5, 0.49]])
    ref = perceive(bto)
    assert ref.space_group == 99
    for dz in (0.13, 0.5, 0.77):
        moved = bto.copy()
        moved.positions[:, 2] += dz * bto.cell[2, 2]
        moved.wrap()
        sk = perceive(moved)
        assert sk.orbits == ref.orbits
        assert np.allclose(np.concatenate([np.r_[f] for f in sk.free]), np.concatenate([np.r_[f] for f in ref.free]), atol=1e-4)
    assert structure_match(bto, build(ref))[0]


def test_crystal_optimisation_writes_cif_and_uses_crystal_validity(tiny_crystal_vae, tmp_path):
    from atomarch.chem.oracles import CHGNetOracle
    from atomarch.metrics.crystals import composition_valid, structure_valid

    model = tiny_crystal_vae
    dm = model.datamodule(root=str(TINY))
    starts = [dm.packed.atoms(int(k)) for k in dm.split["train"][:2]]
    traj = model.optimize(starts, "heat_ref:min", steps=4, decode_every=2)
    flat = [a for row in traj.structures for a in row]
    assert all(a.pbc.all() for a in flat if len(a))
    expected = [bool(len(a)) and structure_valid(a) and composition_valid(a) for a in flat]
    assert traj.valid.reshape(-1).tolist() == expected
    assert CHGNetOracle.judges["formation_energy_per_atom"] == "chgnet_formation_energy"
    paths = traj.write(tmp_path)
    built = sum(len(a) > 0 for a in flat)  # a barely trained model may build no crystal on a path
    assert ((tmp_path / "trajectory.cif") in paths) == (built > 0)
    if built:
        from pymatgen.io.cif import CifParser

        assert len(CifParser(str(tmp_path / "trajectory.cif")).parse_structures(primitive=False)) == built


def test_logvar_init_starts_the_posterior_narrow():
    """``encoder.logvar_init`` (a cure for posterior collapse) sets the initial log-variance."""
    torch.manual_seed(0)
    cfg = {"data": {"dataset": "perov5", "properties": ["heat_ref"], "cutoff": 4.0},
           "model": {"elements": ELEMENTS, "latent_dim": 16,
                     "encoder": {"irreps_hidden": "16x0e+8x1o", "lmax": 1, "num_layers": 1, "hidden": 32,
                                 "pooling": "mean", "logvar_init": -4.0}}}
    net = AtomarchNet(cfg, {"heat_ref": {"mean": 0.0, "std": 1.0}}).eval()
    with torch.no_grad():
        _, logvar = net.encoder(batch_from_atoms([bulk("NaCl", "rocksalt", a=5.64)], net.cutoff))
    assert abs(float(logvar.mean()) + 4.0) < 1.0


def test_fresh_decoder_starts_at_the_training_marginals(tmp_path):
    """``init_from_data``: the composition heads start at the training split's per-element count
    frequencies and the lattice head at the mean lattice, instead of ~T·ln(C) nats per crystal."""
    from atomarch.config import load_config
    from atomarch.data.datamodule import build_datamodule
    from atomarch.nn.decoders.symmetry import SymmetryDecoder

    cfg = load_config(ROOT / "configs" / "tiny_crystal_vae.yaml")
    cfg.data.root = str(ROOT / "tests" / "data" / "crystals")
    cfg.data.cache_dir = str(tmp_path)
    dm = build_datamodule(cfg.data, elements=cfg.model.elements)
    dm.setup()
    SymmetryDecoder.attach_targets(dm, cfg.model)
    net = AtomarchNet(cfg.to_dict(), dm.target_stats())
    dec = net.decoder
    batch = next(iter(dm._loader("train", shuffle=False)))
    z = torch.zeros(batch.num_graphs, cfg.model.latent_dim)
    with torch.no_grad():
        before = dec.losses(batch, z)
        dec.init_from_data(dm)
        after = dec.losses(batch, z)
        lattice, _ = dec.detail(z, batch.tokens[:, :2])
    T = len(cfg.model.elements)
    assert float(before["global"]) > 0.5 * T * np.log(cfg.model.decoder.max_count + 1)
    assert float(after["global"]) < 0.15 * float(before["global"])
    mean = dm.targets["lattice"][torch.as_tensor(dm.split["train"])].float().mean(0)
    assert torch.allclose(lattice.mean(0), mean, atol=0.2)
    assert float(after["lattice"]) < float(before["lattice"])


def test_formula_level_top_k_is_the_exact_ranking_and_matches_its_nll():
    """``composition: formula``: the k most likely cells under reduced formula × formula units are
    exactly the brute-force ranking (every cell with counts ≤ max_count), every proposal's
    log-probability is minus its NLL, and the split into reduced formula and units is exact."""
    import itertools

    from atomarch.nn.decoders.common import FormulaLevel

    torch.manual_seed(0)
    T, C = 3, 2
    level = FormulaLevel(8, T, C, max_units=2)
    for p in level.parameters():
        torch.nn.init.normal_(p, std=1.0)
    z = torch.randn(4, 8)
    cells = torch.tensor([c for c in itertools.product(range(C + 1), repeat=T) if sum(c) > 0])
    red, units = level.split(cells)
    assert torch.equal(red * units.unsqueeze(1), cells)
    assert all(int(np.gcd.reduce(r.tolist())) == 1 for r in red)
    for g in range(len(z)):
        zz = z[g : g + 1].expand(len(cells), -1)
        exact = -level.nll(zz, cells)
        exact = exact.masked_fill(units > level.max_units, float("-inf")).detach()
        top, lp = level.top_k(z[g : g + 1], 5)
        want = exact.sort(descending=True).values[:5]
        assert torch.allclose(lp[0], want, atol=1e-5)
        assert torch.allclose(-level.nll(z[g : g + 1].expand(5, -1), top[0]).detach(), lp[0], atol=1e-5)


def test_formula_composition_trains_decodes_and_is_refused_for_molecules(tmp_path):
    from atomarch.config import config_from_dict, load_config
    from atomarch.data.datamodule import build_datamodule
    from atomarch.errors import ConfigError
    from atomarch.nn.decoders.common import FormulaLevel
    from atomarch.nn.decoders.symmetry import SymmetryDecoder

    with pytest.raises(ConfigError, match="'formula' is for the symmetry"):
        config_from_dict({"model": {"decoder": {"enabled": True, "kind": "graph", "composition": "formula"}}})
    with pytest.raises(ConfigError, match="composition must be 'counts' or 'formula'"):
        config_from_dict({"model": {"decoder": {"enabled": True, "kind": "symmetry", "composition": "ratio"}}})
    cfg = load_config(ROOT / "configs" / "tiny_crystal_vae.yaml")
    cfg.data.root = str(ROOT / "tests" / "data" / "crystals")
    cfg.data.cache_dir = str(tmp_path)
    cfg.model.decoder.composition = "formula"
    dm = build_datamodule(cfg.data, elements=cfg.model.elements)
    dm.setup()
    SymmetryDecoder.attach_targets(dm, cfg.model)
    net = AtomarchNet(cfg.to_dict(), dm.target_stats())
    assert isinstance(net.decoder.global_level, FormulaLevel)
    batch = next(iter(dm._loader("train", shuffle=False)))
    z = torch.zeros(batch.num_graphs, cfg.model.latent_dim)
    with torch.no_grad():
        before = float(net.decoder.losses(batch, z)["global"])
        net.decoder.init_from_data(dm)
        after = float(net.decoder.losses(batch, z)["global"])
    assert after < 0.2 * before
    # learns: a few steps on one batch lower the composition NLL, gradients reach both heads
    opt = torch.optim.Adam(net.decoder.global_level.parameters(), lr=1e-2)
    z = torch.randn(batch.num_graphs, cfg.model.latent_dim)
    first = None
    for _ in range(30):
        loss = net.decoder.losses(batch, z)["global"]
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    net.eval()
    from atomarch.nn.decoders.base import DecodeOptions

    out = net.decoder.decode(z[:2], DecodeOptions(seed=0, beams=4, compositions=3))
    assert len(out) == 2 and all(a is None or bool(a.pbc.all()) for a in out)


# ----------------------------------------------------------- regularised skeleton training
def test_token_dropout_replaces_teacher_forced_inputs_with_pad_only_in_training():
    """``decoder.token_dropout``: while training, inputs after ``<bos>`` become ``<pad>``
    (at 1.0 all of them, so the logits are those of an all-pad input); in eval mode the
    teacher-forced logits are untouched."""
    from atomarch.config import DecoderConfig
    from atomarch.nn.decoders.sequence import SkeletonLevel

    torch.manual_seed(0)
    level = SkeletonLevel(12, 8, 3, DecoderConfig(gru_hidden=16, gru_layers=2, token_dim=8, token_dropout=1.0))
    z, counts = torch.randn(4, 8), torch.randint(0, 3, (4, 3))
    tokens = torch.randint(3, 12, (4, 6))
    tokens[:, 0] = 1  # <bos>
    padded = tokens.clone()
    padded[:, 1:] = 0
    level.eval()
    with torch.no_grad():
        plain, all_pad = level(z, counts, tokens), level(z, counts, padded)
        level.train()
        dropped = level(z, counts, tokens)
        level.token_dropout = 0.0
        kept = level(z, counts, tokens)
    assert not torch.allclose(plain, all_pad)  # the inputs matter, so the check can fail
    torch.testing.assert_close(dropped, all_pad)
    torch.testing.assert_close(kept, plain)  # no token dropout: dropout alone is off in a 0.0-dropout GRU


def test_count_dropout_hides_the_counts_from_the_skeleton_level():
    """``decoder.count_dropout``: while training, that share of rows sees zero counts (each
    row either its own counts or none); at 1.0 the counts are ignored in eval mode too; values
    outside [0, 1] are a ConfigError."""
    from atomarch.config import DecoderConfig, config_from_dict
    from atomarch.errors import ConfigError
    from atomarch.nn.decoders.sequence import SkeletonLevel

    torch.manual_seed(0)
    level = SkeletonLevel(12, 8, 3, DecoderConfig(gru_hidden=16, gru_layers=1, token_dim=8, count_dropout=0.5))
    z, counts = torch.randn(64, 8), torch.randint(1, 4, (64, 3))
    tokens = torch.randint(3, 12, (64, 5))
    tokens[:, 0] = 1
    with torch.no_grad():
        level.eval()
        seen, blind = level(z, counts, tokens), level(z, torch.zeros_like(counts), tokens)
        assert torch.equal(level(z, counts, tokens), seen)  # eval at p < 1: the counts are used
        level.train()
        mixed = level(z, counts, tokens)
    as_seen = torch.isclose(mixed, seen).flatten(1).all(1)
    as_blind = torch.isclose(mixed, blind).flatten(1).all(1)
    assert bool((as_seen | as_blind).all()) and 10 < int(as_blind.sum()) < 54
    level.count_dropout = 1.0
    level.eval()
    with torch.no_grad():
        torch.testing.assert_close(level(z, counts, tokens), blind)
    cfg = {"data": {"dataset": "perov5", "properties": ["heat_ref"]},
           "model": {"elements": ELEMENTS, "decoder": {"enabled": True, "kind": "symmetry", "relax": "none",
                                                       "count_dropout": 1.5}}}
    with pytest.raises(ConfigError, match=r"count_dropout must be in \[0, 1\], got 1.5"):
        config_from_dict(cfg)


def test_init_exclude_starts_named_levels_fresh(tmp_path):
    """``train.init_exclude``: the warm start copies everything but the named levels; a prefix
    that names no parameter is a ConfigError naming it."""
    import atomarch
    from atomarch.config import load_config
    from atomarch.errors import ConfigError
    from atomarch.training import warm_start

    cfg = load_config(ROOT / "configs" / "tiny_crystal_vae.yaml").to_dict()
    stats = {"heat_ref": {"mean": 0.0, "std": 1.0}}
    torch.manual_seed(1)
    source = AtomarchNet(cfg, stats)
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict(), "atomarch_version": atomarch.__version__, "hyper_parameters": {}}, path)
    torch.manual_seed(2)
    target = AtomarchNet(cfg, stats)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    copied = warm_start(target, str(path), ["decoder.skeleton"])
    assert copied and not any(k.startswith("decoder.skeleton.") for k in copied)
    own = target.state_dict()
    for k, v in own.items():
        expected = fresh[k] if k.startswith("decoder.skeleton.") else source.state_dict()[k]
        if k not in ("y_mean", "y_std"):
            assert torch.equal(v, expected), k
    assert not torch.equal(own["decoder.skeleton.out.weight"], source.state_dict()["decoder.skeleton.out.weight"])
    with pytest.raises(ConfigError, match="init_exclude.*'decoder.skelton'"):
        warm_start(target, str(path), ["decoder.skelton"])


def test_parallel_symmetry_perception_gives_the_serial_result():
    """Perception in worker processes returns exactly the serial rows, in the same order."""
    from atomarch.data.crystals import crystal_skeletons
    from atomarch.data.datasets import PackedStructures

    frames = [bulk("NaCl", "rocksalt", a=5.64), bulk("Si", "diamond", a=5.43), bulk("Cu", "fcc", a=3.6),
              bulk("MgO", "rocksalt", a=4.2) * (2, 1, 1), bulk("Fe", "bcc", a=2.87)]
    for a in frames:
        a.info["heat_ref"] = 0.0
    packed = PackedStructures.from_atoms(frames, ["heat_ref"])
    serial = crystal_skeletons(packed, range(len(frames)), progress=False, workers=1)
    parallel = crystal_skeletons(packed, [4, 0, 2, 1, 3], progress=False, workers=2)
    assert serial == parallel and all(r is not None for r in serial)
    assert serial[0]["sg"] == 225 and serial[1]["sg"] == 227
