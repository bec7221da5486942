"""Molecular graphs as strings: 3D geometry → stereo SMILES → SELFIES tokens, and back.

The decoder's skeleton level writes molecules as SELFIES (Krenn et al. 2020): every token
sequence decodes to a molecule that satisfies valence rules, so a generated skeleton is always
chemically well-formed. The training targets come from the 3D structure itself:

1. bonds from the EDM distance table (:func:`atomarch.chem.bonds.bond_orders`), sanitized by RDKit;
2. stereo centres and double-bond E/Z read from the 3D positions;
3. of the molecule and its mirror image, the lexicographically smaller canonical SMILES is kept
   (*mirror-canonical*). The encoder is O(3)-invariant, so enantiomers share a latent; giving
   both the same target keeps the decoder's task well defined, while relative stereochemistry
   (diastereomers, E/Z) — which the encoder does see — is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import selfies as sf
from ase import Atoms
from rdkit import Chem, rdBase

from atomarch.chem.bonds import to_rdkit

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
#: version of the SMILES perception below; part of cache file names
STRINGS_VERSION = "v2"
SPECIAL = (PAD, BOS, EOS)


def stereo_smiles(atoms: Atoms) -> str | None:
    """Mirror-canonical isomeric SMILES (heavy atoms, stereo from 3D) of a molecule, or None
    when no bonds can be perceived that sanitize in RDKit.

    Bonds come from RDKit's ``DetermineBonds`` (xyz2mol, neutral molecule), which reads aromatic
    rings correctly; where it finds no assignment, from the EDM distance rule
    (:func:`atomarch.chem.bonds.bond_orders`)."""
    from atomarch.chem.bonds import determine_bonds

    if len(atoms) == 0:
        return None
    blocker = rdBase.BlockLogs()
    try:
        mol = determine_bonds(atoms)
        if mol is None:
            mol = to_rdkit(atoms)
            Chem.SanitizeMol(mol)
        pos = atoms.get_positions()
        out = []
        for sign in (1.0, -1.0):
            m = Chem.Mol(mol)
            conf = m.GetConformer()
            for k, p in enumerate((pos * np.array([sign, 1.0, 1.0])).tolist()):
                conf.SetAtomPosition(k, p)
            Chem.AssignStereochemistryFrom3D(m)
            out.append(Chem.MolToSmiles(Chem.RemoveHs(m)))
        return min(out)
    except Exception:  # RDKit raises several exception types for unsanitizable graphs
        return None
    finally:
        del blocker


def canonical_smiles(smiles: str) -> str:
    """RDKit canonical isomeric SMILES of a SMILES string: one string per molecule (aromatic
    form, stereo kept). ``""`` stays ``""``; an unparsable string is returned unchanged."""
    if not smiles:
        return ""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    return Chem.MolToSmiles(mol) if mol is not None else smiles


def mirror_canonical(smiles: str) -> str | None:
    """The smaller of the canonical SMILES of a molecule and of its mirror image (tetrahedral
    centres inverted; E/Z kept), the form :func:`stereo_smiles` perceives from 3D. Molecules that
    differ only by being mirror images get the same string (the encoder is O(3)-invariant).
    None for an unparsable SMILES."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        return None
    mirror = Chem.Mol(mol)
    for atom in mirror.GetAtoms():
        tag = atom.GetChiralTag()
        if tag == Chem.ChiralType.CHI_TETRAHEDRAL_CW:
            atom.SetChiralTag(Chem.ChiralType.CHI_TETRAHEDRAL_CCW)
        elif tag == Chem.ChiralType.CHI_TETRAHEDRAL_CCW:
            atom.SetChiralTag(Chem.ChiralType.CHI_TETRAHEDRAL_CW)
    return min(Chem.MolToSmiles(mol), Chem.MolToSmiles(mirror))


def molecule_key(atoms: Atoms) -> str | None:
    """What identifies a molecule for "same molecule?" questions: the mirror-canonical SMILES
    of the graph it was built from (``atoms.info["graph_smiles"]``, set for SMILES inputs and
    decoded molecules) or, for structures read from files, of the graph perceived from its 3D
    geometry (:func:`stereo_smiles`). None when no graph can be perceived."""
    graph = atoms.info.get("graph_smiles")
    if graph:
        return mirror_canonical(graph)
    return stereo_smiles(atoms)


def smiles_to_selfies(smiles: str) -> str | None:
    """SELFIES of a SMILES string, or None if SELFIES cannot represent it."""
    try:
        return sf.encoder(smiles)
    except Exception:  # selfies.EncoderError and RDKit-side failures
        return None


def selfies_to_smiles(selfies: str) -> str:
    """SMILES of a SELFIES string (always a valence-valid molecule; ``""`` when empty)."""
    return sf.decoder(selfies) or ""


class Vocabulary:
    """SELFIES token ↔ integer id, with ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2.

    Args:
        tokens: the SELFIES tokens (without the special tokens), e.g. ``["[C]", "[=O]", ...]``.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        extra = sorted(set(tokens) - set(SPECIAL))
        self.tokens: list[str] = list(SPECIAL) + extra
        self.index = {t: k for k, t in enumerate(self.tokens)}

    @classmethod
    def from_selfies(cls, strings: Iterable[str | None]) -> Vocabulary:
        alphabet: set[str] = set()
        for s in strings:
            if s:
                alphabet.update(sf.split_selfies(s))
        return cls(alphabet)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, selfies: str | None, max_length: int) -> np.ndarray | None:
        """Token ids ``[tokens..., <eos>]`` (int64), or None when the string is missing, has a
        token outside the vocabulary or is longer than ``max_length - 1`` tokens."""
        if not selfies:
            return None
        parts = list(sf.split_selfies(selfies))
        if len(parts) + 1 > max_length or any(t not in self.index for t in parts):
            return None
        return np.array([self.index[t] for t in parts] + [self.index[EOS]], dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids → SELFIES string, stopping at the first ``<eos>`` (pads and ``<bos>`` skipped)."""
        out = []
        for k in ids:
            k = int(k)
            if k == self.index[EOS]:
                break
            if k > 2:
                out.append(self.tokens[k])
        return "".join(out)


def token_table(smiles: Sequence[str | None], vocab: Vocabulary, max_length: int) -> tuple[np.ndarray, int]:
    """Padded token ids [M, max_length] (int16, all-pad rows where there is no usable target)
    of SMILES strings, and the number of such missing targets."""
    table = np.zeros((len(smiles), max_length), dtype=np.int16)
    missing = 0
    for k, s in enumerate(smiles):
        ids = vocab.encode(smiles_to_selfies(s), max_length) if s else None
        if ids is None:
            missing += 1
            continue
        table[k, : len(ids)] = ids
    return table, missing
