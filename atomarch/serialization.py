"""Safe files: checkpoints and dataset caches hold tensors and plain values only.

Every ``.ckpt``/``.pt`` file atomarch reads goes through :func:`safe_load`, i.e.
``torch.load(weights_only=True)``: torch's restricted unpickler builds tensors, dicts
(``OrderedDict`` too), lists, tuples, str, int, float, bool and None, and refuses any other
global — so a file carrying a pickled object whose ``__reduce__`` would run code is rejected
before that code runs, with a one-line :class:`~atomarch.errors.AtomarchError`. No extra types
are allow-listed (no ``torch.serialization.add_safe_globals``): Lightning's training
checkpoints (weights, optimiser and scheduler state, loop and callback state) are plain data
and load as they are. Writers pass their data through :func:`plain` first (numpy arrays and
scalars become lists and Python numbers; anything else is an error naming its key).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomarch.errors import AtomarchError

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_OTHER = ("unrecognized function", "Can only build", "Can only create", "Unsupported class")


def safe_load(path: str | Path, error: type[AtomarchError], what: str, remedy: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors.

    Args:
        path: the file.
        error: the :class:`AtomarchError` subclass to raise.
        what: what the file is, for the message (``"checkpoint"``, ``"dataset cache"``).
        remedy: appended to the message (e.g. ``"; delete it to rebuild"``).

    Raises:
        error: the file holds pickled objects other than tensors and plain values (refused,
            nothing in it was run), or it is corrupt / not a PyTorch file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        refused = refused_global(exc)
        if refused is not None:
            raise error(
                f"{what} {path} holds a pickled Python object ({refused}) that could run code when loaded: "
                f"refused (only tensors and plain values are loaded){remedy}"
            ) from None
        raise error(f"{what} {path} is corrupt or not a PyTorch file ({type(exc).__name__}){remedy}") from exc


def refused_global(exc: BaseException) -> str | None:
    """The global that torch's ``weights_only`` unpickler refused (e.g. ``"exec"``,
    ``"numpy._core.multiarray._reconstruct"``), or None when ``exc`` is another failure."""
    text = str(exc)
    m = _GLOBAL.search(text)
    if m:
        return m.group(1)
    if "WeightsUnpickler" in text and any(o in text for o in _OTHER):
        return "a disallowed type"
    return None  # e.g. "Unsupported operand": not a pickle at all, i.e. corrupt


def plain(obj: Any, where: str = "") -> Any:
    """``obj`` with only types :func:`safe_load` accepts: tensors (detached, on the CPU), dicts
    (``OrderedDict`` kept), lists, tuples, str, int, float, bool, None; numpy arrays become
    lists and numpy scalars Python numbers.

    Raises:
        TypeError: any other object (``where`` names its key path).
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        items = ((k, plain(v, f"{where}.{k}" if where else str(k))) for k, v in obj.items())
        bad = [k for k in obj if not isinstance(k, (str, int, float, bool)) and k is not None]
        if bad:
            raise TypeError(f"{where or 'checkpoint'}: key {bad[0]!r} of type {type(bad[0]).__name__} is not a plain value")
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, (list, tuple)):
        out = [plain(v, f"{where}[{k}]") for k, v in enumerate(obj)]
        return tuple(out) if isinstance(obj, tuple) else out
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{where or 'value'} is a {type(obj).__module__}.{type(obj).__qualname__}, not a tensor or plain value")


def safe_save(obj: Any, path: str | Path) -> Path:
    """Write ``plain(obj)`` with ``torch.save`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    data = plain(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    tmp.replace(path)
    return path
