"""Mutation check: plant known bugs in a temporary copy of the repository and check that the
default (non-slow) tests catch each of them.

For every mutation: copy the tree (without .git, .venv, runs, checkpoints, caches) to a
temporary directory, apply one exact string replacement to one file of the copy, run the
relevant test files there with ``python -m pytest`` (PYTHONPATH and the working directory point at
the copy, so the copy's code is what runs) and record whether a test failed. The working tree
is never modified. Before the mutations, the same tests run once on an unmodified copy (the
baseline): a mutation only counts as caught if its tests pass without it.

    python benchmarks/mutation_check.py            # all mutations, a table at the end
    python benchmarks/mutation_check.py -k seed    # mutations whose name contains "seed"
    python benchmarks/mutation_check.py --list

Exit status 0 when every selected mutation is caught (and every baseline passes), else 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "runs", "checkpoints", "__pycache__", ".pytest_cache",
                                "*.egg-info", "docs", ".mypy_cache", ".ruff_cache")


@dataclass
class Mutation:
    name: str
    path: str  # file in the repository
    old: str  # exact text, must occur exactly once
    new: str
    tests: tuple[str, ...]  # pytest arguments (files, node ids, -k expressions)


MUTATIONS = [
    Mutation(
        "validity always True",
        "atomarch/latent/optimize.py",
        "return np.array([s is not None for s in smiles], dtype=bool), smiles",
        "return np.ones(len(smiles), dtype=bool), smiles",
        ("tests/test_latent_tools.py", "-k", "validity_flags_invalid"),
    ),
    Mutation(
        "sample() ignores its seed",
        "atomarch/models/api.py",
        "gen = torch.Generator().manual_seed(noise_seed(seed, 2))",
        "gen = torch.Generator().manual_seed(noise_seed(0, 2))",
        ("tests/test_flow_decoder.py", "-k", "sample_is_seeded"),
    ),
    Mutation(
        "skeleton choice ignores the encoder",
        "atomarch/nn/decoders/graph.py",
        "picks = _closest(owner, encode(probes) if probes else None, z_np, picks)",
        "picks = [0] * len(skeletons)",
        ("tests/test_graph_decoder.py", "-k", "skeleton_choice_follows"),
    ),
    Mutation(
        "evaluate MAE in standardized units",
        "atomarch/models/net.py",
        'err = (self.to_physical(out["pred"]) - batch.y).abs()',
        'err = (out["pred"] - (batch.y - self.y_mean) / self.y_std).abs()',
        ("tests/test_cli_decoding.py", "-k", "property_mae_is_in_physical_units"),
    ),
    Mutation(
        "optimiser state dropped on resume",
        "atomarch/models/task.py",
        'self.projection = checkpoint.get("atomarch_projection")',
        'self.projection = checkpoint.get("atomarch_projection")\n        checkpoint["optimizer_states"] = []',
        ("tests/test_training.py", "-k", "resume_is_exact and mid-epoch"),
    ),
    Mutation(
        "conformer seed collapse (seed 0)",
        "atomarch/chem/embed.py",
        "params.randomSeed = conformer_seed(seed, n)",
        "params.randomSeed = int(seed) % (2**31)",
        ("tests/test_graph_decoder.py", "-k", "distinct_deterministic"),
    ),
    Mutation(
        "resume restarts the epoch's data order",
        "atomarch/training.py",
        "sampler.resume_at(self.epoch, self.batches * self.batch_size)",
        "pass",
        ("tests/test_training.py", "-k", "resume_is_exact and mid-epoch"),
    ),
    Mutation(
        "resume loses the RNG stream",
        "atomarch/training.py",
        "torch.manual_seed(_seed(self.seed, 7002, trainer.global_step, trainer.global_rank))",
        "pass",
        ("tests/test_training.py", "-k", "vae_resume_is_exact"),
    ),
    Mutation(
        "explorer echoes a bad reference whole",
        "apps/explorer/service.py",
        'raise ExplorerError(f"not a structure reference: {shown(ref)}',
        'raise ExplorerError(f"not a structure reference: {ref!r}',
        ("tests/test_explorer_callbacks.py", "-k", "reference_parsing"),
    ),
]


def copy_tree(dest: Path) -> Path:
    repo = dest / "repo"
    shutil.copytree(ROOT, repo, ignore=IGNORE, symlinks=True)
    return repo


def run_tests(repo: Path, tests: tuple[str, ...], timeout: int) -> tuple[int, float, str]:
    """Run pytest on ``repo`` (its own code first on the path); (exit status, seconds, tail)."""
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = res.returncode, res.stdout + res.stderr
    except subprocess.TimeoutExpired as exc:
        code, out = -1, f"timed out after {timeout} s\n{exc.stdout or ''}"
    return code, time.perf_counter() - t0, out[-1500:]


def check_imports_copy(repo: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = subprocess.run([sys.executable, "-c", "import atomarch, apps; print(atomarch.__file__); print(apps.__file__)"],
                         cwd=repo, env=env, capture_output=True, text=True, check=True).stdout.split()
    if not all(Path(p).resolve().is_relative_to(repo.resolve()) for p in out):
        raise SystemExit(f"the copy's tests would import the installed package, not the copy: {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutations whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per test run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the tail of every pytest run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k.lower() in m.name.lower()]
    if args.list:
        for m in chosen:
            print(f"{m.name:<40} {m.path}  ->  pytest {' '.join(m.tests)}")
        return 0
    failed = False
    with tempfile.TemporaryDirectory(prefix="atomarch-mutation-") as tmp:
        tmp = Path(tmp)
        clean = copy_tree(tmp / "clean")
        check_imports_copy(clean)
        baseline: dict[tuple[str, ...], tuple[int, float]] = {}
        if not args.no_baseline:
            for tests in dict.fromkeys(m.tests for m in chosen):
                code, secs, tail = run_tests(clean, tests, args.timeout)
                baseline[tests] = (code, secs)
                status = "passes" if code == 0 else f"FAILS (exit {code})"
                print(f"baseline  pytest {' '.join(tests)}: {status} in {secs:.0f} s", flush=True)
                if code != 0:
                    failed = True
                    print(tail)
        rows = []
        for k, m in enumerate(chosen):
            repo = copy_tree(tmp / f"m{k}")
            target = repo / m.path
            text = target.read_text()
            if text.count(m.old) != 1:
                rows.append((m, "not applied", f"text found {text.count(m.old)} times", 0.0))
                failed = True
                shutil.rmtree(repo.parent)
                continue
            target.write_text(text.replace(m.old, m.new))
            code, secs, tail = run_tests(repo, m.tests, args.timeout)
            if code == 1:
                caught = "yes"
            elif code == 0:
                caught, failed = "NO", True
            else:
                caught, failed = f"error (exit {code})", True
            rows.append((m, caught, "", secs))
            print(f"{m.name}: caught {caught} in {secs:.0f} s", flush=True)
            if args.verbose or code not in (0, 1):
                print(tail)
            shutil.rmtree(repo.parent)
    print()
    head = f"| {'mutation':<40} | {'tests run':<64} | {'caught':<7} | {'seconds':>7} |"
    print(head)
    print("|" + "-" * 42 + "|" + "-" * 66 + "|" + "-" * 9 + "|" + "-" * 9 + "|")
    for m, caught, note, secs in rows:
        tests = " ".join(m.tests)
        print(f"| {m.name:<40} | {tests:<64} | {caught + (' ' + note if note else ''):<7} | {secs:>7.0f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
