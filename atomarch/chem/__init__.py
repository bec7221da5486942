"""Chemistry bridge: bond perception from 3D geometry (EDM/G-SchNet distance rules) and RDKit.

See :mod:`atomarch.chem.bonds` for :func:`bond_orders`, :func:`to_rdkit`, :func:`mol_smiles`
and :func:`heavy_graph_key`.
"""

from atomarch.chem.bonds import ALLOWED_VALENCE, bond_orders, heavy_graph_key, mol_smiles, to_rdkit

__all__ = ["ALLOWED_VALENCE", "bond_orders", "heavy_graph_key", "mol_smiles", "to_rdkit"]
