"""Cell-choice invariance of a crystal model's latent, measured on its dataset's test split.

For each crystal: the latent mean of its Niggli cell (as stored) against the latents of the same
crystal given as the primitive cell, the conventional standard cell (spglib via pymatgen), a 2x2x1
supercell, and the Niggli cell with atoms permuted, translated and wrapped and the whole crystal
rotated. Prints the median and maximum relative change ||z' - z|| / ||z|| per cell choice.

    python benchmarks/cell_invariance.py --ckpt checkpoints/mp20-vae -n 200
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np


def variants(atoms, rng: np.random.Generator) -> dict:
    from ase.build import make_supercell
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = AseAtomsAdaptor.get_structure(atoms)
    out = {"primitive": AseAtomsAdaptor.get_atoms(structure.get_primitive_structure())}
    # the conventional cell of this very crystal (not spglib's idealised one): spglib's
    # (a_s b_s c_s) = (a b c) P^-1, i.e. the supercell of the given cell with rows inv(P)^T
    dataset = SpacegroupAnalyzer(structure, symprec=0.1).get_symmetry_dataset()
    m = np.linalg.inv(np.asarray(dataset.transformation_matrix)).T
    if np.allclose(m, np.round(m), atol=1e-3) and round(abs(np.linalg.det(m))) >= 1:
        out["conventional"] = make_supercell(atoms, np.round(m).astype(int))
    out["supercell 2x2x1"] = make_supercell(atoms, np.diag([2, 2, 1]))
    moved = atoms[rng.permutation(len(atoms))]
    moved.positions += rng.normal(size=3) * 5.0
    moved.wrap()
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    moved.set_cell(moved.cell[:] @ q.T, scale_atoms=True)
    out["permuted+translated+wrapped+rotated"] = moved
    for a in out.values():
        a.pbc = True
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("-n", type=int, default=200, help="test crystals")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import atomarch

    model = atomarch.load_model(args.ckpt)
    dm = model.datamodule()
    rng = np.random.default_rng(args.seed)
    idx = dm.split["test"][: args.n]
    frames = [dm.packed.atoms(int(k)) for k in idx]
    ref = model.encode(frames)
    changes: dict[str, list[float]] = {}
    for atoms, z in zip(frames, ref):
        for name, other in variants(atoms, rng).items():
            z2 = model.encode([other])[0]
            changes.setdefault(name, []).append(float(np.linalg.norm(z2 - z) / np.linalg.norm(z)))
    print(f"{args.ckpt}: {len(frames)} test crystals of {model.cfg.data.dataset}; relative latent change ||z'-z||/||z||")
    print(f"{'cell choice':<40} {'n':>5} {'median':>10} {'max':>10}")
    for name, v in changes.items():
        print(f"{name:<40} {len(v):5d} {np.median(v):10.2e} {np.max(v):10.2e}")


if __name__ == "__main__":
    main()
