"""Where a checkpoint lives on disk (no torch import: the CLI checks paths before loading torch)."""

from __future__ import annotations

from pathlib import Path

from atomarch.errors import CheckpointError

CANDIDATES = ("model.ckpt", "last.ckpt", "checkpoints/last.ckpt")
"""Files looked for, in order, when a checkpoint argument is a directory."""


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file of ``path`` (a file, or a directory holding one of :data:`CANDIDATES`).

    Raises:
        CheckpointError: empty argument, missing file, or a directory without a checkpoint.
    """
    if not str(path).strip():
        raise CheckpointError("the checkpoint argument is empty (give a .ckpt file or a directory such as checkpoints/qm9-vae)")
    path = Path(path)
    if path.is_dir():
        found = next((path / c for c in CANDIDATES if (path / c).is_file()), None)
        if found is None:
            raise CheckpointError(f"no checkpoint in directory {path} (looked for {', '.join(CANDIDATES)})")
        return found
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path
