"""Registries of what a config names: encoders, decoders and datasets (name → class).

A light module (no torch import): :mod:`atomarch.config` validates ``model.encoder.kind`` and
``model.decoder.kind`` against these names before anything heavy is imported, and the model
builds the part with :meth:`Registry.get`, which imports the class's module on first use. A new
encoder or decoder family is one entry here (``"name": "module:Class"``) and a class with
the registry's interface (:class:`atomarch.nn.encoders.Encoder`,
:class:`atomarch.nn.decoders.base.Decoder`).
"""

from __future__ import annotations

import importlib
from typing import Any

RELAX_METHODS = ("mmff", "xtb", "chgnet", "none")
"""Detail-level relaxations (config ``model.decoder.relax``, ``--relax``): ``mmff``/``xtb`` for
molecules (graph decoder), ``chgnet`` for crystals (symmetry decoder), ``none`` for both."""

PRIORS = ("standard", "fitted")
"""Where sampling and optimisation put latents: N(0, I), or the Gaussian fit of the aggregate
posterior stored at export (:meth:`atomarch.models.api.AtomarchModel.prior_domain`)."""


class Registry:
    """Names of one kind of part, each mapped to the ``"module:Class"`` that implements it."""

    def __init__(self, what: str, entries: dict[str, str]) -> None:
        self.what = what
        self._entries = dict(entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Any:
        """The class registered as ``name`` (its module is imported now)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.what} kind {name!r} (known: {', '.join(self._entries)})")
        module, _, attr = self._entries[name].partition(":")
        return getattr(importlib.import_module(module), attr)


ENCODERS = Registry("encoder", {
    "e3nn": "atomarch.nn.encoders:E3Encoder",
    "schnet": "atomarch.nn.encoders:SchNetEncoder",
    "mpnn": "atomarch.nn.encoders:MPNNEncoder",
    "cgcnn": "atomarch.nn.encoders:CGCNNEncoder",
    "elemnet": "atomarch.nn.composition:ElemNetEncoder",
})
POOLINGS = ("sum_mean", "mean", "attention")
"""Encoder readout poolings (config ``model.encoder.pooling``, :class:`atomarch.nn.readout.LatentReadout`):
``sum_mean`` extensive (molecules); ``mean`` and ``attention`` intensive (any cell of a crystal)."""
DECODERS = Registry("decoder", {
    "graph": "atomarch.nn.decoders.graph:GraphDecoder",
    "flow": "atomarch.nn.decoders.flow:HierarchicalDecoder",
    "symmetry": "atomarch.nn.decoders.symmetry:SymmetryDecoder",
})


DATASETS = Registry("dataset", {
    "qm9": "atomarch.data.datamodule:QM9DataModule",
    "files": "atomarch.data.datamodule:FilesDataModule",
    "perov5": "atomarch.data.datamodule:CrystalDataModule",
    "carbon24": "atomarch.data.datamodule:CrystalDataModule",
    "mp20": "atomarch.data.datamodule:CrystalDataModule",
    "mpts52": "atomarch.data.datamodule:CrystalDataModule",
    "wbm": "atomarch.data.datamodule:CrystalDataModule",
    "formation_energy": "atomarch.data.datamodule:CrystalDataModule",
    "aflow_bulk_modulus": "atomarch.data.datamodule:CrystalDataModule",
    "aflow_shear_modulus": "atomarch.data.datamodule:CrystalDataModule",
    "aflow_debye_temperature": "atomarch.data.datamodule:CrystalDataModule",
    "aflow_thermal_conductivity": "atomarch.data.datamodule:CrystalDataModule",
    "aflow_thermal_expansion": "atomarch.data.datamodule:CrystalDataModule",
})
"""``data.dataset`` names → their LightningDataModule."""

CRYSTAL_PROPERTIES: dict[str, dict[str, str]] = {
    "perov5": {"heat_ref": "eV/atom", "heat_all": "eV/atom", "dir_gap": "eV", "ind_gap": "eV"},
    "carbon24": {"energy_per_atom": "eV/atom"},
    "mp20": {"formation_energy_per_atom": "eV/atom", "band_gap": "eV", "e_above_hull": "eV/atom"},
    "mpts52": {"formation_energy_per_atom": "eV/atom", "energy_above_hull": "eV/atom"},
    "wbm": {"formation_energy_per_atom": "eV/atom", "band_gap": "eV"},
    "formation_energy": {"formation_energy_per_atom": "eV/atom"},
    # AFLOW AEL-AGL quantities, in AFLOW's units
    "aflow_bulk_modulus": {"bulk_modulus": "GPa"},
    "aflow_shear_modulus": {"shear_modulus": "GPa"},
    "aflow_debye_temperature": {"debye_temperature": "K"},
    "aflow_thermal_conductivity": {"thermal_conductivity": "W/(m K)"},
    "aflow_thermal_expansion": {"thermal_expansion": "1/K"},
}
"""Per crystal dataset: its property columns and their units (files: :mod:`atomarch.data.crystals`)."""


def one_of(names: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'`` for error messages."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
