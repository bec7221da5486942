"""Loading trained models from checkpoints, with clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import torch

from atomarch._version import __version__
from atomarch.errors import CheckpointError
from atomarch.models.files import resolve_checkpoint
from atomarch.models.api import AtomarchModel
from atomarch.models.net import AtomarchNet
from atomarch.serialization import plain, safe_load, safe_save

COMPATIBLE_MAJOR_MINOR = ".".join(__version__.split(".")[:2])


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, checked to be an atomarch checkpoint of a compatible version.

    Loaded with ``torch.load(weights_only=True)`` (:func:`atomarch.serialization.safe_load`): a
    file holding any pickled object other than tensors and plain values is refused with a
    :class:`CheckpointError` before anything in it runs."""
    path = resolve_checkpoint(path)
    # weights_only: tensors and plain values only; a pickled object that would run code is refused
    ckpt = safe_load(path, CheckpointError, "checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "atomarch_version" not in ckpt:
        raise CheckpointError(f"{path} is not an atomarch checkpoint (no state_dict/atomarch_version)")
    version = str(ckpt["atomarch_version"])
    if ".".join(version.split(".")[:2]) != COMPATIBLE_MAJOR_MINOR:
        raise CheckpointError(
            f"checkpoint {path} was written by atomarch {version}; this is atomarch {__version__} "
            f"(compatible: {COMPATIBLE_MAJOR_MINOR}.x)"
        )
    ckpt["_path"] = str(path)
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> AtomarchModel:
    """Load a trained model (a ``.ckpt`` file or a directory holding ``model.ckpt``/``last.ckpt``).

    Returns the user-facing :class:`~atomarch.models.api.AtomarchModel` in eval mode on
    ``device``. Exported files and a run's Lightning checkpoints (``last.ckpt``, ``best.ckpt``)
    hold the same state-dict keys and both load here.
    """
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters", {})
    try:
        net = AtomarchNet(config=hp["config"], stats=hp["stats"], vocab=hp.get("vocab"))
        net.load_state_dict(ckpt["state_dict"])
        model = AtomarchModel(net=net)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {ckpt['_path']} does not match this model code: {exc}") from exc
    model.checkpoint_path = ckpt["_path"]
    model.projection = ckpt.get("atomarch_projection")
    if ckpt.get("atomarch_domain"):
        from atomarch.latent.domain import Domain

        model.domain = Domain.from_dict(ckpt["atomarch_domain"])
    return model.to(device).eval()


def export_checkpoint(src: str | Path, dst: str | Path, projection: dict | None = None, half: bool = False,
                      domain: dict | None = None, state_overrides: dict | None = None) -> Path:
    """Write a small inference checkpoint: weights, hyper-parameters, config, version and the map
    projection (``projection`` replaces a stored one), without optimiser or callback state (a few
    MB). It loads with :func:`load_model` but does not resume training. ``half`` stores the
    floating-point weights as float16 (half the size; they load back into float32 parameters,
    so evaluate the exported file, not the training checkpoint). ``domain`` (primitive types, see
    :class:`atomarch.latent.domain.Domain`) replaces a stored training-domain description;
    ``state_overrides`` (state-dict name → tensor, e.g. recalibrated normalisation statistics)
    replaces those entries, each of which must exist."""
    ckpt = read_checkpoint(src)
    for k, v in (state_overrides or {}).items():
        if k not in ckpt["state_dict"]:
            raise CheckpointError(f"export: {src} has no weight {k!r} to replace")
        ckpt["state_dict"][k] = v.detach().to(ckpt["state_dict"][k].dtype).cpu()
    keep = {k: ckpt[k] for k in ("state_dict", "hyper_parameters", "atomarch_version", "atomarch_config", "epoch", "global_step",
                                 "atomarch_projection", "atomarch_domain") if k in ckpt}
    if half:
        keep["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in keep["state_dict"].items()}
        keep["weights_dtype"] = "float16"
    if projection is not None:
        keep["atomarch_projection"] = projection
    if domain is not None:
        keep["atomarch_domain"] = domain
    keep["exported_from"] = ckpt["_path"]
    return _save_checkpoint(keep, dst)


def _save_checkpoint(data: dict, dst: str | Path) -> Path:
    """Write a checkpoint of tensors and plain values only (numpy arrays become lists) and check
    that it loads back with ``weights_only=True``."""
    try:
        dst = safe_save(data, dst)
    except TypeError as exc:
        raise CheckpointError(f"cannot write checkpoint {dst}: {exc}") from None
    safe_load(dst, CheckpointError, "written checkpoint")
    return dst


def convert_checkpoint(src: str | Path, dst: str | Path | None = None) -> Path:
    """Rewrite a checkpoint written by an older atomarch so that it loads with
    ``weights_only=True``: every value becomes a tensor or a plain value (numpy arrays → lists,
    numpy scalars → numbers, other dict types → dicts); anything else is an error naming its
    key. ``dst`` defaults to ``src`` (replaced atomically).

    This is the one place atomarch unpickles with ``weights_only=False``: convert only files
    you trust (your own runs, the shipped checkpoints)."""
    src = resolve_checkpoint(src)
    try:
        data = torch.load(src, map_location="cpu", weights_only=False)  # trusted input only, see above
    except Exception as exc:
        raise CheckpointError(f"checkpoint {src} is corrupt or not a PyTorch file ({type(exc).__name__})") from exc
    if not isinstance(data, dict) or "state_dict" not in data:
        raise CheckpointError(f"{src} is not an atomarch checkpoint (no state_dict)")
    try:
        plain(data)
    except TypeError as exc:
        raise CheckpointError(f"cannot convert {src}: {exc}") from None
    return _save_checkpoint(data, dst or src)
