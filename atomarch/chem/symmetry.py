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

import functools
import math
import warnings
from collections.abc import Sequence
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
        free_sets: per orbit, the free parameters of every equivalent representative of the
            orbit (the atoms of the orbit that lie on the position's first form, e.g. ``x`` and
            ``-x`` for ``(x, 0, 0)``); ``free`` is the smallest of them. Any of them rebuilds the
            same crystal, so a decoder's coordinate loss takes the nearest one.
    """

    space_group: int
    orbits: list[tuple[str, str]]
    lattice: tuple[float, float, float, float, float, float]
    coords: list[tuple[float, float, float]] = field(default_factory=list)
    free: list[tuple[float, ...]] = field(default_factory=list)
    free_sets: list[list[tuple[float, ...]]] = field(default_factory=list)

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
    candidates = [a for sk in candidates for a in anchored(sk)]
    return min(candidates, key=lambda sk: (sk.orbits, sk.free, sk.coords))


@functools.lru_cache(maxsize=None)
def polar_axes(number: int) -> tuple[int, ...]:
    """Axes along which group ``number`` leaves the origin free (every operation fixes the axis
    vector: P1 all three, Pm x and z, P2 y, P4mm/P6mm/mm2/R3m... z)."""
    from pyxtal.symmetry import Group

    ops = Group(int(number)).Wyckoff_positions[0].ops
    eye = np.eye(3)
    return tuple(k for k in range(3) if all(np.allclose(op.rotation_matrix[:, k], eye[k]) for op in ops))


def anchored(sk: SymmetrySkeleton) -> list[SymmetrySkeleton]:
    """A skeleton with its origin fixed along the group's polar axes (:func:`polar_axes`), where
    the group itself does not fix it: shifted so that a representative of the first orbit sits at
    0 on those axes. Every choice of anchor among the first orbit's equivalents is returned (the
    caller keeps the smallest), so the result does not depend on where the input's origin was.
    Without this, the free coordinates of a polar crystal (e.g. the z of every atom in P4mm)
    would be defined only up to a common shift, which no decoder can learn."""
    axes = list(polar_axes(sk.space_group))
    if not axes or not sk.orbits:
        return [sk]
    from pyxtal.symmetry import Group

    group = Group(int(sk.space_group))
    wps = [group.get_wyckoff_position(letter) for _, letter in sk.orbits]
    out = []
    for j, orbit in enumerate(sk.orbits):
        if orbit != sk.orbits[0]:
            continue
        for rep in sk.free_sets[j] or [sk.free[j]]:
            anchor = np.asarray(wps[j].get_position_from_free_xyzs(list(rep)) if rep else sk.coords[j], dtype=float)
            shift = np.zeros(3)
            shift[axes] = -anchor[axes]
            sites = []
            for (el, letter), wp, pos in zip(sk.orbits, wps, sk.coords):
                new = (np.asarray(pos, dtype=float) + shift) % 1.0
                reps = _representatives(wp, new)
                p = wp.get_position_from_free_xyzs(list(reps[0])) if reps[0] else new
                sites.append((el, letter, tuple(round(float(v) % 1.0, 6) % 1.0 for v in p), reps))
            sites.sort(key=lambda t: (t[0], t[1], t[3][0], t[2]))
            out.append(SymmetrySkeleton(sk.space_group, [(el, letter) for el, letter, _, _ in sites], sk.lattice,
                                        [t[2] for t in sites], [t[3][0] for t in sites], [t[3] for t in sites]))
    return out


def _representatives(wp, position) -> list[tuple[float, ...]]:
    """Free parameters of every atom of the orbit of ``position`` that lies on the Wyckoff
    position's first form (sorted; the first is the canonical representative)."""
    if not wp.get_dof():
        return [()]
    frozen = wp.get_frozen_axis() or []
    out = set()
    for c in np.asarray(wp.apply_ops(np.asarray(position, dtype=float)), dtype=float):
        c = c - np.floor(c)
        on_form = wp.ops[0].operate(c)
        d = (on_form - c + 0.5) % 1.0 - 0.5
        if np.abs(d).max() < 1e-3:
            out.add(tuple(round(float(v) % 1.0, 6) % 1.0 for k, v in enumerate(c) if k not in frozen))
    return sorted(out) or [tuple(float(v) for v in wp.get_free_xyzs(position))]


def _skeleton_of(xtal) -> SymmetrySkeleton:
    sites = []
    for site in xtal.atom_sites:
        reps = _representatives(site.wp, site.position)
        pos = tuple(round(float(v) % 1.0, 6) % 1.0 for v in (site.wp.get_position_from_free_xyzs(reps[0])
                                                            if reps[0] else site.position))
        sites.append((str(site.specie), site.wp.letter, pos, reps))
    sites.sort(key=lambda s: (s[0], s[1], s[3][0], s[2]))
    return SymmetrySkeleton(
        space_group=int(xtal.group.number),
        orbits=[(el, letter) for el, letter, _, _ in sites],
        lattice=tuple(float(v) for v in xtal.lattice.get_para(degree=True)),
        coords=[pos for _, _, pos, _ in sites],
        free=[reps[0] for _, _, _, reps in sites],
        free_sets=[reps for _, _, _, reps in sites],
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


# ---------------------------------------------------------------- the space-group tables
LETTERS = "abcdefghijklmnopqrstuvwxyzA"
"""Wyckoff letters, in the order of the International Tables (group 47 has 27 positions)."""
CENTERING = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "F": 4, "R": 3}
"""Lattice points per conventional cell of each centring (R groups in their hexagonal setting)."""


@dataclass(frozen=True)
class GroupInfo:
    """What a decoder needs to know of a space group: its Wyckoff positions
    (letter → (multiplicity in the conventional cell, free parameters)), its lattice system
    and its centring (lattice points per conventional cell)."""

    number: int
    symbol: str
    lattice_system: str
    centering: int
    positions: dict[str, tuple[int, int]]


@functools.lru_cache(maxsize=None)
def group_info(number: int) -> GroupInfo:
    """The :class:`GroupInfo` of space group ``number`` (1–230), from pyxtal's tables."""
    from pyxtal.symmetry import Group

    if not 1 <= int(number) <= 230:
        raise StructureError(f"space group {number} does not exist (1–230)")
    g = Group(int(number))
    positions = {wp.letter: (int(wp.multiplicity), int(wp.get_dof())) for wp in g.Wyckoff_positions}
    return GroupInfo(int(number), str(g.symbol), str(g.lattice_type), CENTERING[str(g.symbol)[0]], positions)


def constrain_lattice(params: Sequence[float], number: int) -> tuple[float, float, float, float, float, float]:
    """Lattice parameters ``(a, b, c, α, β, γ)`` (Å, degrees) made consistent with the lattice
    system of group ``number`` (pyxtal's settings: monoclinic unique axis b, trigonal and
    rhombohedral groups in the hexagonal setting): equal lengths averaged, fixed angles set."""
    a, b, c, al, be, ga = (float(v) for v in params)
    system = group_info(number).lattice_system
    if system == "cubic":
        a = b = c = (a + b + c) / 3.0
        al = be = ga = 90.0
    elif system == "tetragonal":
        a = b = (a + b) / 2.0
        al = be = ga = 90.0
    elif system in ("hexagonal", "trigonal"):
        a = b = (a + b) / 2.0
        al, be, ga = 90.0, 90.0, 120.0
    elif system == "orthorhombic":
        al = be = ga = 90.0
    elif system == "monoclinic":
        al = ga = 90.0
    return a, b, c, al, be, ga


def primitive_counts(number: int, orbits: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Atoms per element in the primitive cell of a skeleton (multiplicities over the centring);
    a :class:`StructureError` for a letter the group does not have."""
    info = group_info(number)
    counts: dict[str, int] = {}
    for el, letter in orbits:
        if letter not in info.positions:
            raise StructureError(f"space group {number} has no Wyckoff position {letter!r}")
        counts[el] = counts.get(el, 0) + info.positions[letter][0]
    return {el: n // info.centering for el, n in counts.items()}


def from_free(number: int, orbits: Sequence[tuple[str, str]], lattice: Sequence[float],
              free: Sequence[Sequence[float]]) -> SymmetrySkeleton:
    """A complete skeleton from its discrete part, lattice parameters (made consistent with the
    group) and each orbit's free parameters (only the first ``dof`` numbers of each are used)."""
    from pyxtal.symmetry import Group

    group = Group(int(number))
    coords, frees = [], []
    for (el, letter), f in zip(orbits, free):
        wp = group.get_wyckoff_position(letter)
        dof = int(wp.get_dof())
        vals = tuple(float(v) % 1.0 for v in list(f)[:dof])
        pos = wp.get_position_from_free_xyzs(list(vals)) if dof else wp.ops[0].operate(np.zeros(3))
        coords.append(tuple(float(v) % 1.0 for v in pos))
        frees.append(vals)
    return SymmetrySkeleton(int(number), list(orbits), constrain_lattice(lattice, number), coords, frees,
                            [[f] for f in frees])


# ---------------------------------------------------------------- skeletons as token sequences
class SkeletonTokens:
    """The token vocabulary of crystal skeletons: ``SG<n>`` (230 groups), element symbols and
    Wyckoff letters (``@a`` ... ``@A``), after ``<pad>``, ``<bos>``, ``<eos>`` (ids 0, 1, 2).

    A skeleton is the sequence ``SG<n>, El, @letter, El, @letter, ..., <eos>``, orbits in the
    canonical order of :func:`perceive`.

    Args:
        elements: the element symbols a model knows (their order fixes their ids).
    """

    PAD, BOS, EOS = 0, 1, 2

    def __init__(self, elements: Sequence[str]) -> None:
        self.elements = list(elements)
        self.tokens = ["<pad>", "<bos>", "<eos>"] + [f"SG{n}" for n in range(1, 231)] + self.elements \
            + [f"@{c}" for c in LETTERS]
        self.index = {t: k for k, t in enumerate(self.tokens)}
        self.sg0 = 3
        self.el0 = self.sg0 + 230
        self.letter0 = self.el0 + len(self.elements)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, number: int, orbits: Sequence[tuple[str, str]], max_length: int) -> np.ndarray | None:
        """Token ids [L ≤ max_length] ending with ``<eos>``, or None (too long, unknown element)."""
        ids = [self.sg0 + int(number) - 1]
        for el, letter in orbits:
            if el not in self.index or f"@{letter}" not in self.index:
                return None
            ids += [self.index[el], self.index[f"@{letter}"]]
        ids.append(self.EOS)
        return np.asarray(ids, dtype=np.int64) if len(ids) <= max_length else None

    def decode(self, ids: Sequence[int]) -> tuple[int, list[tuple[str, str]]] | None:
        """Token ids (without ``<bos>``, up to ``<eos>``) → (space group, orbits); None when the
        sequence does not follow the grammar."""
        ids = [int(k) for k in ids]
        if ids and ids[-1] == self.EOS:
            ids = ids[:-1]
        if not ids or not self.sg0 <= ids[0] < self.el0 or len(ids) % 2 == 0:
            return None
        orbits = []
        for el, letter in zip(ids[1::2], ids[2::2]):
            if not (self.el0 <= el < self.letter0 and letter >= self.letter0):
                return None
            orbits.append((self.tokens[el], self.tokens[letter][1:]))
        return ids[0] - self.sg0 + 1, orbits

    @functools.cached_property
    def letter_mask(self) -> np.ndarray:
        """[230, V] bool: the letter tokens each group allows."""
        mask = np.zeros((230, len(self.tokens)), dtype=bool)
        for n in range(1, 231):
            for letter in group_info(n).positions:
                mask[n - 1, self.index[f"@{letter}"]] = True
        return mask


def lattice_features(lattice: Sequence[float]) -> np.ndarray:
    """``(a, b, c, α, β, γ)`` → [6] regression targets: ln of the lengths (Å) and the angles in radians."""
    a, b, c, al, be, ga = (float(v) for v in lattice)
    return np.array([math.log(a), math.log(b), math.log(c), math.radians(al), math.radians(be), math.radians(ga)])


def lattice_from_features(x: Sequence[float]) -> tuple[float, float, float, float, float, float]:
    """Inverse of :func:`lattice_features` (angles clipped to 30°–150°)."""
    la, lb, lc, al, be, ga = (float(v) for v in x)
    ang = [min(150.0, max(30.0, math.degrees(v))) for v in (al, be, ga)]
    return (math.exp(la), math.exp(lb), math.exp(lc), *ang)
