"""Structure file suffixes (light: no numpy/ASE import, so the CLI can check paths at once)."""

KNOWN_SUFFIXES = frozenset({".xyz", ".extxyz", ".cif", ".traj", ".db", ".sdf", ".pdb", ".json", ".vasp", ".poscar", ".mol"})
"""Suffixes that mark a command-line argument as a file path rather than a SMILES string."""


def looks_like_path(item: str) -> bool:
    """Whether a command-line input is meant as a file (a known structure suffix or a trailing
    path separator); SMILES may contain ``/`` and ``\\`` (E/Z bonds), so those alone do not count."""
    from pathlib import PurePath

    return PurePath(item).suffix.lower() in KNOWN_SUFFIXES or item.endswith(("/", "\\"))
