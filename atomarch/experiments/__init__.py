"""Experiments from the source papers, kept runnable beside the shipped models (not part of them).

* :mod:`~atomarch.experiments.tetris`: the Tetris shape classification of the tensor-field
  network paper (``benchmarks/tetris.py``).
* :mod:`~atomarch.experiments.completion`: missing-atom completion (``benchmarks/missing_atom.py``).
* :mod:`~atomarch.experiments.image_baseline`: the 2D image baseline (``benchmarks/image_baseline.py``).
"""
