"""Whole-dataset latent maps: encode every structure, project to 2D, tabulate for the explorer.

``atomarch map`` writes the table (parquet) that the explorer app loads: one row per structure
with ``id``, ``split``, map coordinates ``x``/``y``, ``smiles`` (molecules) or ``material_id``
(crystals), ``formula``, ``natoms``, the true properties and the heads' predictions
(``pred_<name>``), in physical units, and ``dataset`` (the data set a row comes from).

A crystal model's map can hold other crystal datasets beside its own (``atomarch map --also
mpts52,wbm,aflow_bulk_modulus``): their rows carry the dataset's name as ``split`` (one map
trace each), their own labels where a column matches a model property (NaN elsewhere), and
structures with elements the model does not know are left out (counted).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from atomarch.data.graph import Collater


@torch.no_grad()
def encode_split(model, dm, split: str, batch_size: int = 256, progress: bool = True,
                 variance_sum: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Latent means [n, d] and predictions [n, P] (physical units) of a split of data module ``dm``.
    ``variance_sum`` (a list): receives the sum over structures of the posterior variances [d]
    (exp logvar), for the aggregate posterior (:meth:`~atomarch.latent.domain.Domain.fit_latents`)."""
    loader = DataLoader(dm.dataset(split), batch_size=batch_size, shuffle=False, collate_fn=Collater(model.cutoff))
    model.eval()
    mus, preds = [], []
    var = torch.zeros(model.cfg.model.latent_dim, dtype=torch.float64)
    for batch in tqdm(loader, desc=f"encoding {split}", disable=not progress, mininterval=2.0):
        out = model(batch.to(model.device))
        mus.append(out["mu"].cpu())
        preds.append(model.to_physical(out["pred"]).cpu())
        if out.get("logvar") is not None:
            var += out["logvar"].double().exp().sum(0).cpu()
    d, P = model.cfg.model.latent_dim, len(model.properties)
    mu = torch.cat(mus).numpy() if mus else np.zeros((0, d), np.float32)
    pred = torch.cat(preds).numpy() if preds else np.zeros((0, P), np.float32)
    if variance_sum is not None:
        variance_sum.append(var.numpy())
    return mu, pred


def fit_map(model, dm=None, progress: bool = True) -> dict[str, Any]:
    """Fit the 2D PCA map on the training split's latent means and attach it to ``model``; also
    describe the training domain (sizes + latent distribution, :class:`~atomarch.latent.domain.Domain`)
    as ``model.domain``."""
    from atomarch.latent.domain import domain_of
    from atomarch.latent.projection import fit_pca

    dm = dm or model.datamodule()
    var: list = []
    mu, _ = encode_split(model, dm, "train", progress=progress, variance_sum=var)
    model.projection = fit_pca(mu)
    noise = var[0] / max(1, len(mu)) if model.decoder is not None else None
    model.domain = domain_of(dm.packed, dm.split["train"]).fit_latents(mu, noise)
    return model.projection


def build_map(model, progress: bool = True, whole: bool = True, also: tuple[str, ...] | list[str] = ()):
    """The explorer's table for the model's whole dataset (pandas DataFrame, see module docstring);
    ``whole=False`` keeps the checkpoint's configured split subsets (``data.*_subset``); ``also``:
    further crystal datasets (names of :data:`atomarch.registry.DATASETS`) mapped beside it.
    Fits the projection on the fly (with a warning) when the checkpoint carries none."""
    import warnings

    import pandas as pd

    from atomarch.chem.strings import canonical_smiles
    from atomarch.latent.projection import apply_projection, fit_pca

    dm = model.datamodule(**(dict(train_subset=None, val_subset=None, test_subset=None) if whole else {}))
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {s: encode_split(model, dm, s, progress=progress) for s in ("train", "val", "test")}
    if model.projection is None:
        warnings.warn("the checkpoint has no stored map projection; fitting one now (run `atomarch export` to store it)")
        model.projection = fit_pca(parts["train"][0])
    packed = dm.packed
    frames = []
    cols = packed.property_columns(model.properties)
    for split, (mu, pred) in parts.items():
        idx = dm.split[split]
        xy = apply_projection(model.projection, mu)
        natoms = (packed.ptr[1:] - packed.ptr[:-1]).numpy()[idx]
        df = pd.DataFrame({"index": idx.astype(np.int64), "id": packed.ids.numpy()[idx], "split": split,
                           "x": xy[:, 0], "y": xy[:, 1], "natoms": natoms})
        if bool(packed.pbc.all()):  # crystals: the text column holds material ids
            df["material_id"] = [packed.text[int(k)] for k in idx] if packed.text else ""
            df["smiles"] = ""
        else:
            df["smiles"] = [canonical_smiles(packed.text[int(k)]) for k in idx] if packed.text else ""
        df["formula"] = [_formula(packed.z[int(packed.ptr[k]) : int(packed.ptr[k + 1])].numpy()) for k in idx]
        y = packed.y[torch.as_tensor(idx)][:, cols].numpy() if len(idx) else np.zeros((0, len(cols)))
        for j, p in enumerate(model.properties):
            df[p] = y[:, j]
            df[f"pred_{p}"] = pred[:, j]
        df["dataset"] = model.cfg.data.dataset
        frames.append(df)
    for name in also:
        frames.append(_other_dataset(model, name, progress))
    with warnings.catch_warnings():  # all-NaN label columns of other datasets: float either way
        warnings.simplefilter("ignore", FutureWarning)
        return pd.concat(frames, ignore_index=True)


def other_datamodule(model, name: str):
    """The data module of crystal dataset ``name`` read with ``model``'s data settings (root,
    cutoff, cache), its labels that match a model property, and the model's elements."""
    from atomarch.errors import ConfigError
    from atomarch.registry import CRYSTAL_PROPERTIES

    if name not in CRYSTAL_PROPERTIES:
        raise ConfigError(f"--also: {name!r} is not a crystal dataset (known: {', '.join(CRYSTAL_PROPERTIES)})")
    if name == model.cfg.data.dataset:
        raise ConfigError(f"--also: {name!r} is the model's own dataset (it is always mapped)")
    props = [p for p in model.properties if p in CRYSTAL_PROPERTIES[name]]
    return model.datamodule(dataset=name, properties=props, train_subset=None, val_subset=None, test_subset=None)


def _other_dataset(model, name: str, progress: bool):
    import pandas as pd

    from atomarch.latent.projection import apply_projection

    dm = other_datamodule(model, name)
    packed = dm.packed
    cols = {p: j for j, p in enumerate(dm.cfg.properties)}
    frames = []
    for split in ("train", "val", "test"):
        idx = dm.split[split]
        if not len(idx):
            continue
        mu, pred = encode_split(model, dm, split, progress=progress)
        xy = apply_projection(model.projection, mu)
        df = pd.DataFrame({"index": idx.astype(np.int64), "id": packed.ids.numpy()[idx], "split": name,
                           "x": xy[:, 0], "y": xy[:, 1], "natoms": (packed.ptr[1:] - packed.ptr[:-1]).numpy()[idx]})
        df["material_id"] = [packed.text[int(k)] for k in idx] if packed.text else ""
        df["smiles"] = ""
        df["formula"] = [_formula(packed.z[int(packed.ptr[k]) : int(packed.ptr[k + 1])].numpy()) for k in idx]
        y = packed.y[torch.as_tensor(idx)].numpy() if cols else None
        for j, p in enumerate(model.properties):
            df[p] = y[:, packed.property_columns([p])[0]] if p in cols else np.full(len(idx), np.nan)
            df[f"pred_{p}"] = pred[:, j]
        df["dataset"] = name
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _formula(numbers: np.ndarray) -> str:
    from ase.formula import Formula
    from ase.data import chemical_symbols

    return Formula("".join(chemical_symbols[int(z)] for z in numbers)).format("hill")
