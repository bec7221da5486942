"""The crystal data layer: CDVAE CSVs → Niggli-reduced periodic structures, cached, split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymatgen")

from atomarch.data.crystals import load_crystals, parse_cif  # noqa: E402
from atomarch.errors import ConfigError, ReadError  # noqa: E402

TINY = Path(__file__).with_name("data") / "crystals"


def test_perov5_split_cell_and_properties(tmp_path):
    packed, split = load_crystals("perov5", TINY, tmp_path)
    assert len(packed) == 40
    assert {k: len(v) for k, v in split.items()} == {"train": 18, "val": 2, "test": 20}
    assert not set(split["train"]) & set(split["val"]) and set(split["test"]) == set(range(20, 40))
    atoms = packed.atoms(int(split["train"][0]))
    assert atoms.pbc.all() and len(atoms) == 5 and atoms.get_volume() > 10
    assert packed.properties == ["heat_ref", "heat_all", "dir_gap", "ind_gap"]
    assert np.isfinite(packed.y[:, 0].numpy()).all()
    assert packed.text[20] == __import__("pandas").read_csv(TINY / "perov_5" / "test.csv").material_id[0].astype(str)
    # Niggli cell: a <= b <= c
    a, b, c = atoms.cell.lengths()
    assert a <= b + 1e-6 <= c + 2e-6


def test_cache_is_reused_and_keyed_by_the_files(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(TINY, root)
    load_crystals("perov5", root, tmp_path / "cache")
    caches = list((tmp_path / "cache").glob("crystals-perov5-*.pt"))
    assert len(caches) == 1
    packed, _ = load_crystals("perov5", root, tmp_path / "cache")  # from the cache
    assert len(packed) == 40 and len(list((tmp_path / "cache").glob("*.pt"))) == 1
    import pandas as pd

    test_csv = root / "perov_5" / "test.csv"
    pd.read_csv(test_csv).head(10).to_csv(test_csv, index=False)  # a changed file: a new cache
    packed, split = load_crystals("perov5", root, tmp_path / "cache")
    assert len(split["test"]) == 10 and len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_bad_cif_names_file_and_row(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(TINY, root)
    import pandas as pd

    df = pd.read_csv(root / "perov_5" / "val.csv")
    df.loc[3, "cif"] = "data_broken\n_cell_length_a 4.0\nloop_\n_atom_site_label\n"
    df.to_csv(root / "perov_5" / "val.csv", index=False)
    with pytest.raises(ReadError, match=r"val\.csv:3 \(" + str(df.material_id[3]) + r"\): cannot parse the CIF"):
        load_crystals("perov5", root, tmp_path / "cache")


def test_zero_volume_cif_refused():
    cif = """data_x
_symmetry_space_group_name_H-M 'P 1'
_cell_length_a 4.0
_cell_length_b 4.0
_cell_length_c 4.0
_cell_angle_alpha 0.0
_cell_angle_beta 90.0
_cell_angle_gamma 90.0
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Na1 Na 0 0 0
"""
    with pytest.raises(ReadError, match="x.csv:0"):
        parse_cif(cif, "x.csv:0")


def test_malformed_csv_is_a_read_error(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(TINY, root)
    text = (root / "perov_5" / "val.csv").read_text()
    (root / "perov_5" / "val.csv").write_text(text[: len(text) // 2])  # cut inside a quoted CIF
    with pytest.raises(ReadError, match="cannot read .*val.csv"):
        load_crystals("perov5", root, tmp_path / "cache")


def test_unknown_dataset_and_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="unknown crystal dataset 'perov6'"):
        load_crystals("perov6", TINY, tmp_path)
    empty = tmp_path / "no_crystals"
    empty.mkdir()
    with pytest.raises(ReadError, match="set data.root"):
        load_crystals("mp20", empty, tmp_path)


def test_crystal_datamodule_batches(tmp_path):
    from atomarch.config import DataConfig
    from atomarch.data.datamodule import build_datamodule

    cfg = DataConfig(dataset="perov5", root=str(TINY), cache_dir=str(tmp_path), properties=["heat_ref"], batch_size=4)
    dm = build_datamodule(cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 4 and batch.z.numel() == 20
    assert batch.edge_index.shape[1] > 0 and batch.y.shape == (4, 1)
    stats = dm.target_stats()
    assert stats["heat_ref"]["std"] > 0


def test_published_val_split_rows_without_ids_and_unknown_elements_left_out(tmp_path):
    """AFLOW-style files (train/val/test, no material_id column): the published val split is used
    as is, rows get ids from file and row, and a model's element list leaves out structures with
    other elements (counted, not silently)."""
    import pandas as pd

    from atomarch.config import DataConfig
    from atomarch.data.crystals import load_crystals
    from atomarch.data.datamodule import build_datamodule

    src = pd.read_csv(Path(__file__).with_name("data") / "crystals" / "perov_5" / "val.csv")
    folder = tmp_path / "aflow" / "bulk_modulus"
    folder.mkdir(parents=True)
    rows = src[["cif"]].assign(bulk_modulus=range(len(src)))
    rows.iloc[:12].to_csv(folder / "train.csv.gz", index=True)
    rows.iloc[12:16].to_csv(folder / "val.csv.gz", index=True)
    rows.iloc[16:].to_csv(folder / "test.csv.gz", index=True)
    packed, split = load_crystals("aflow_bulk_modulus", tmp_path, tmp_path / "cache", progress=False)
    assert [len(split[k]) for k in ("train", "val", "test")] == [12, 4, len(src) - 16]
    assert packed.text[split["val"][0]] == "bulk_modulus/val:0"
    first = packed.atoms(int(split["train"][0]))
    keep = sorted({s for s in first.get_chemical_symbols()})
    others = {s for k in split["train"][1:] for s in packed.atoms(int(k)).get_chemical_symbols()} - set(keep)
    dm = build_datamodule(DataConfig(dataset="aflow_bulk_modulus", properties=["bulk_modulus"], root=str(tmp_path),
                                     cache_dir=str(tmp_path / "cache")), elements=keep)
    dm.setup()
    assert int(split["train"][0]) in dm.split["train"].tolist()
    if others:
        assert len(dm.split["train"]) < 12
    for k in dm.split["train"]:
        assert set(packed.atoms(int(k)).get_chemical_symbols()) <= set(keep)


def test_map_holds_other_crystal_datasets_and_the_explorer_opens_their_rows(crystal_explorer_files, tmp_path):
    """``atomarch map --also``: rows of another crystal dataset get its name as split and dataset,
    its labels where a column matches a model property (NaN otherwise), the same projection; the
    explorer loads such a row's crystal from that dataset."""
    import pandas as pd

    from apps.explorer.service import Explorer
    from atomarch.data.crystals import load_crystals
    from atomarch.latent.maps import build_map
    from atomarch.models.loading import load_model

    ckpt, _ = crystal_explorer_files
    root = tmp_path / "data"
    shutil.copytree(Path(__file__).with_name("data") / "crystals" / "perov_5", root / "perov_5")
    src = pd.read_csv(root / "perov_5" / "val.csv")
    folder = root / "aflow" / "bulk_modulus"
    folder.mkdir(parents=True)
    rows = src[["cif"]].assign(bulk_modulus=np.arange(len(src), dtype=float))
    rows.iloc[:10].to_csv(folder / "train.csv.gz")
    rows.iloc[10:14].to_csv(folder / "val.csv.gz")
    rows.iloc[14:].to_csv(folder / "test.csv.gz")
    model = load_model(ckpt)
    model.cfg.data.root = str(root)
    model.cfg.data.cache_dir = str(tmp_path / "cache")
    table = build_map(model, progress=False, also=["aflow_bulk_modulus"])
    other = table[table["dataset"] == "aflow_bulk_modulus"]
    own = table[table["dataset"] == "perov5"]
    assert len(own) > 0 and set(own["split"]) <= {"train", "val", "test"}
    assert len(other) == len(src) and set(other["split"]) == {"aflow_bulk_modulus"}
    assert other["heat_ref"].isna().all() and np.isfinite(other["pred_heat_ref"]).all()
    assert np.isfinite(other[["x", "y"]].to_numpy()).all()
    explorer = Explorer(model, table)
    pos = int(np.flatnonzero(table["dataset"].to_numpy() == "aflow_bulk_modulus")[3])
    packed, _ = load_crystals("aflow_bulk_modulus", root, tmp_path / "cache", progress=False)
    expected = packed.atoms(int(table["index"].iat[pos]))
    got = explorer._load_row(pos)
    assert got.get_chemical_formula() == expected.get_chemical_formula()
    assert np.allclose(got.cell.array, expected.cell.array)
    with pytest.raises(Exception, match="not a crystal dataset"):
        build_map(model, progress=False, also=["qm9"])
