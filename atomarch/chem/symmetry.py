"""Crystals as symmetry skeletons: space group + Wyckoff orbits (the discrete part) + lattice
parameters and free coordinates (the continuous part), and back.

This is the crystal counterpart of SELFIES for molecules: any skeleton (a space group, a list of
(element, Wyckoff letter) orbits) builds a complete crystal with that symmetry, so a decoder
that writes skeletons never produces a half-made cell. Perception runs spglib through pymatgen
(``SpacegroupAnalyzer``) and re-reads the refined structure with pyxtal, whose Wyckoff setting
is used for every coordinate (pymatgen/spglib and pyxtal use different origin choices for some
groups; coordinates are never mixed between them). Building uses pyxtal.

Rebuilding from the exact skeleton reproduces the input (StructureMatcher, CDVAE tolerances):
see ``benchmarks/symmetry_round_trip.py`` for the measured rates.

Needs the crystal extra (``pymatgen``, ``spglib``, ``pyxtal``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from atomarch.errors import StructureError

SYMPREC = 0.1
"""Å: spglib's distance tolerance for the symmetry search."""
ANGLE_TOLERANCE = 5.0
"""Degrees: spglib's angle tolerance."""


@dataclass
class SymmetrySkeleton:
    """A crystal by its symmetry.

    Attributes:
        space_group: international number 1–230.
        orbits: ``(element, Wyckoff letter)`` per occupied orbit, in canonical order (by
            element, then letter, then coordinates). Of the equivalent descriptions of a crystal
            under its group's other Wyckoff settings (e.g. NaCl as Na 4a + Cl 4b or Na 4b + Cl 4a),
            the lexicographically smallest is kept, so the same crystal always gets the same
            tokens whatever cell, origin, orientation or atom order it came in.
        lattice: ``(a, b, c, alpha, beta, gamma)`` of the conventional cell, Å and degrees.
        coords: per orbit, the fractional coordinates [3] of its representative atom (pyxtal's
            setting of the group).
        free: per orbit, the free parameters of that position (0–3 numbers).
    """

    space_group: int
    orbits: list[tuple[str, str]]
    lattice: tuple[float, float, float, float, float, float]
    coords: list[tuple[float, float, float]] = field(default_factory=list)
    free: list[tuple[float, ...]] = field(default_factory=list)

    @property
    def tokens(self) -> list[str]:
        """The discrete skeleton as tokens: ``SG<number>`` then ``<element>:<letter>`` per orbit."""
        return [f"SG{self.space_group}"] + [f"{el}:{letter}" for el, letter in self.orbits]


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


def perceive(atoms: Atoms, symprec: float = SYMPREC, angle_tolerance: float = ANGLE_TOLERANCE) -> SymmetrySkeleton:
    """The symmetry skeleton of a periodic structure (see the module docstring).

    Raises:
        StructureError: the structure is not periodic, or the symmetry search fails.
    """
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    from pyxtal import pyxtal

    if not np.asarray(atoms.get_pbc()).all():
        raise StructureError("a symmetry skeleton needs a periodic structure (pbc on all three axes)")
    ctx = _quiet()
    try:
        structure = AseAtomsAdaptor.get_structure(atoms)
        refined = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance).get_refined_structure()
        xtal = pyxtal()
        xtal.from_seed(refined, tol=1e-3)
    except Exception as exc:  # spglib/pyxtal raise several types on degenerate input
        raise StructureError(f"symmetry perception failed ({type(exc).__name__}: {str(exc)[:120]})") from None
    finally:
        ctx.__exit__(None, None, None)
    candidates = [_skeleton_of(xtal)]
    ctx = _quiet()
    try:  # the same crystal under the group's other Wyckoff settings (origin shifts, axis choices)
        candidates += [_skeleton_of(alt) for alt in xtal.get_alternatives(include_self=False)]
    except Exception:  # pyxtal cannot enumerate them for a few settings: keep the one we have
        pass
    finally:
        ctx.__exit__(None, None, None)
    return min(candidates, key=lambda sk: (sk.orbits, sk.coords))


def _skeleton_of(xtal) -> SymmetrySkeleton:
    sites = []
    for site in xtal.atom_sites:
        pos = tuple(round(float(v) % 1.0, 6) % 1.0 for v in site.position)
        free = tuple(float(v) for v in site.wp.get_free_xyzs(site.position)) if site.wp.get_dof() else ()
        sites.append((str(site.specie), site.wp.letter, pos, free))
    sites.sort(key=lambda s: (s[0], s[1], s[2]))
    return SymmetrySkeleton(
        space_group=int(xtal.group.number),
        orbits=[(el, letter) for el, letter, _, _ in sites],
        lattice=tuple(float(v) for v in xtal.lattice.get_para(degree=True)),
        coords=[pos for _, _, pos, _ in sites],
        free=[free for _, _, _, free in sites],
    )


def build(skeleton: SymmetrySkeleton, primitive: bool = True) -> Atoms:
    """A periodic ``ase.Atoms`` from a skeleton: the conventional cell, or (``primitive``) its
    primitive cell, Niggli-reduced.

    Raises:
        StructureError: the skeleton is inconsistent (unknown letter for the group, a lattice
            the group does not allow, ...).
    """
    from pymatgen.io.ase import AseAtomsAdaptor
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice

    species: list[str] = []
    for el, _ in skeleton.orbits:
        if el not in species:
            species.append(el)
    group_sites: list[list] = [[] for _ in species]
    counts = [0] * len(species)
    ctx = _quiet()
    try:
        from pyxtal.symmetry import Group

        group = Group(skeleton.space_group)
        for (el, letter), xyz in zip(skeleton.orbits, skeleton.coords):
            wp = group.get_wyckoff_position(letter)
            k = species.index(el)
            group_sites[k].append((f"{wp.multiplicity}{letter}", *map(float, xyz)))
            counts[k] += wp.multiplicity
        lattice = Lattice.from_para(*skeleton.lattice, ltype=group.lattice_type)
        xtal = pyxtal()
        xtal.build(skeleton.space_group, species, counts, lattice, group_sites)
        structure = xtal.to_pymatgen()
        if primitive:
            structure = structure.get_primitive_structure(tolerance=0.05).get_reduced_structure("niggli")
    except Exception as exc:
        raise StructureError(f"cannot build a crystal from skeleton {skeleton.tokens} ({type(exc).__name__}: "
                             f"{str(exc)[:120]})") from None
    finally:
        ctx.__exit__(None, None, None)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.pbc = True
    return atoms
