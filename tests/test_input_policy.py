"""One policy for bad structure input, for every command that reads structures: exit status 2
and one line ``error: ...`` naming the file (and the structure), never a traceback.

Table-driven: commands x bad inputs, run in-process through ``atomarch.cli.main``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atomarch.cli import main

from conftest import ROOT

WATER = "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"

# name: (file name, contents, fragments the error line must hold besides the file name); structure
# errors name the structure by its source, "<file>:<frame>"
BAD_INPUTS = {
    "malformed": ("malformed.xyz", "3\nx\nC 0 0\n", ["cannot read"]),
    "empty-file": ("empty.xyz", "", []),
    "no-atoms": ("noatoms.xyz", "0\nnothing here\n", ["noatoms.xyz:0", "is empty"]),
    "nan": ("nan.xyz", "2\nx\nC 0 0 0\nO nan 0 0\n", ["nan.xyz:0", "non-finite"]),
    "overlap": ("overlap.xyz", "2\nx\nC 0 0 0\nO 0.05 0 0\n", ["overlap.xyz:0", "overlapping atoms 0 and 1"]),
    "bad-second-frame": ("second.xyz", WATER + "2\nx\nC 0 0 0\nO 0.05 0 0\n", ["second.xyz:1", "overlapping atoms 0 and 1"]),
    "unknown-element": ("sulfur.xyz", "2\nx\nC 0 0 0\nS 1.8 0 0\n", ["sulfur.xyz:0", "element S", "supported: H, C, N, O, F"]),
    "zero-volume-cell": ("flat.extxyz", '2\nLattice="3 0 0 0 3 0 3 3 0" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
                         "C 0 0 0\nO 1.2 0 0\n", ["flat.extxyz:0", "zero volume"]),
    "huge-coordinate": ("huge.xyz", "2\nx\nC 0 0 0\nO 1e300 0 0\n", ["huge.xyz:0", "coordinate beyond"]),
    "too-large": ("large.xyz", "4\nx\nC 0 0 0\nO 1.2 0 0\nH 0 1.1 0\nH 0 0 1.1\n", ["large.xyz:0", "more than the limit of 3"]),
}


def files_checkpoint(src: str, data_file: Path, tmp_path: Path) -> str:
    """``src`` with its config pointing at a files dataset holding only ``data_file``."""
    data = torch.load(src, weights_only=True)
    for cfg in (data["hyper_parameters"]["config"], data["atomarch_config"]):
        cfg["data"].update(dataset="files", paths=[str(data_file)], cache_dir=str(tmp_path / "cache"), train_subset=None,
                           val_subset=None, test_subset=None)
    out = tmp_path / f"files-{data_file.stem}.ckpt"
    torch.save(data, out)
    return str(out)


def argv_for(command: str, path: Path, tmp_path: Path, prop: str, vae: str) -> list[str]:
    f = str(path)
    return {
        "encode": lambda: ["encode", "--ckpt", prop, f, "--out", str(tmp_path / "z.npy")],
        "predict": lambda: ["predict", "--ckpt", prop, "O", f],
        "reconstruct": lambda: ["reconstruct", "--ckpt", vae, f, "--out", str(tmp_path / "rec.xyz"), "--relax", "none"],
        "interpolate": lambda: ["interpolate", "--ckpt", vae, "O", f, "--out", str(tmp_path / "path.xyz"), "--relax", "none"],
        "optimize": lambda: ["optimize", "--ckpt", vae, "--start", f, "--objective", "gap:max", "--steps", "2",
                             "--oracle", "none", "--relax", "none", "--out", str(tmp_path / "opt")],
        "map": lambda: ["map", "--ckpt", files_checkpoint(prop, path, tmp_path), "--out", str(tmp_path / "map.csv")],
        "evaluate": lambda: ["evaluate", "--ckpt", files_checkpoint(prop, path, tmp_path), "--out", str(tmp_path / "e.json")],
        "train": lambda: ["train", "--config", str(ROOT / "configs/tiny.yaml"), "data.dataset=files", f"data.paths=[{f}]",
                          f"data.cache_dir={tmp_path / 'cache'}", f"train.out_dir={tmp_path / 'runs'}"],
    }[command]()


COMMANDS = ["encode", "predict", "reconstruct", "interpolate", "optimize", "map", "evaluate", "train"]


@pytest.fixture(scope="module")
def checkpoints(tiny_run, tiny_vae_run):
    return str(tiny_run / "checkpoints" / "last.ckpt"), str(tiny_vae_run / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_gives_one_error_line(command, bad, checkpoints, tmp_path, capsys, monkeypatch):
    name, text, fragments = BAD_INPUTS[bad]
    if command == "interpolate" and bad == "bad-second-frame":
        pytest.skip("interpolate reads the first frame of each file")
    if bad == "too-large":
        monkeypatch.setattr("atomarch.data.structures.MAX_ATOMS", 3)
    path = tmp_path / name
    path.write_text(text)
    prop, vae = checkpoints
    argv = argv_for(command, path, tmp_path, prop, vae)
    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    lines = [l for l in out.err.splitlines() if l.strip() and not l.startswith("warning: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, out.err[-2000:])
    assert "Traceback" not in out.err and "Traceback" not in out.out
    for fragment in [name, *fragments]:
        assert fragment in lines[0], (fragment, lines[0])


def test_good_file_passes_every_reader(checkpoints, tmp_path, capsys):
    """The same commands accept a good file (so the table above tests the inputs, not the setup)."""
    path = tmp_path / "good.xyz"
    path.write_text(WATER + WATER.replace("water", "water 2"))
    prop, vae = checkpoints
    for command in ("encode", "predict", "reconstruct", "interpolate"):
        assert main(argv_for(command, path, tmp_path, prop, vae)) == 0, capsys.readouterr().err[-2000:]


def test_cif_without_a_cell_is_refused_by_name(tmp_path):
    from atomarch.data.structures import read_structures
    from atomarch.errors import ReadError

    path = tmp_path / "nocell.cif"
    path.write_text("data_x\n_symmetry_space_group_name_H-M 'P 1'\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
                    "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nNa1 Na 0 0 0\nCl1 Cl 0.5 0.5 0.5\n")
    with pytest.raises(ReadError, match="nocell.cif: block 0 has no unit cell"):
        read_structures(path)
