"""Evaluation metrics for generated and reconstructed molecules (EDM protocol, versioned).

Every result dict carries ``evaluator_version`` (:data:`EVALUATOR_VERSION`).
"""

from atomarch.metrics.generation import (
    EDM_QM9_DATA,
    EVALUATOR_VERSION,
    evaluate_generated,
    format_generation_table,
    stability,
)
from atomarch.metrics.reconstruction import evaluate_reconstruction, heavy_atom_rmsd

__all__ = [
    "EDM_QM9_DATA",
    "EVALUATOR_VERSION",
    "evaluate_generated",
    "evaluate_reconstruction",
    "format_generation_table",
    "heavy_atom_rmsd",
    "stability",
]
