"""Missing-atom completion (the tensor field network experiment) with atomarch's encoder.

One atom is removed from a molecule; every remaining atom votes for the missing atom:

* element scores ``s_i`` [n_elements] (0e), a confidence ``c_i`` (0e) and a displacement
  ``d_i`` [3] Å (1o) from an ``o3.Linear`` head on the :class:`E3Encoder`'s last layer;
* weights ``w_i = softmax(c)`` over the atoms of the molecule;
* element probabilities ``p = Σ_i w_i softmax(s_i)``; position ``x̂ = Σ_i w_i (x_i + d_i)``.

The element is invariant and the position equivariant under rotations, reflections,
translations and permutations of the remaining atoms. A prediction is *correct* when the
element is right and ``|x̂ - x| < 0.5 Å``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3
from torch import nn

from atomarch.config import EncoderConfig
from atomarch.data.datasets import PackedStructures
from atomarch.data.graph import AtomGraph
from atomarch.data.neighbors import dense_radius_graph
from atomarch.nn.encoders import E3Encoder
from atomarch.nn.readout import scatter_sum

ELEMENTS = [1, 6, 7, 8, 9]
"""QM9 elements (H, C, N, O, F); class k of the element scores is ``ELEMENTS[k]``."""


@dataclass
class CompletionExamples:
    """Molecules with one atom removed (B examples, N remaining atoms in all).

    z: [N] atomic numbers; pos: [N, 3] Å; ptr: [B + 1] offsets into z/pos;
    target_z: [B] element class of the removed atom (index into :data:`ELEMENTS`);
    target_pos: [B, 3] its position, Å.
    """

    z: torch.Tensor
    pos: torch.Tensor
    ptr: torch.Tensor
    target_z: torch.Tensor
    target_pos: torch.Tensor

    def __len__(self) -> int:
        return int(self.target_z.shape[0])

    def transformed(self, R: torch.Tensor, t: torch.Tensor) -> CompletionExamples:
        """Copy with positions mapped to ``pos @ R.T + t`` (R [3, 3], t [3])."""
        return CompletionExamples(self.z, self.pos @ R.T + t, self.ptr, self.target_z, self.target_pos @ R.T + t)


def molecules_by_size(packed: PackedStructures, lo: int, hi: int, n: int, seed: int) -> np.ndarray:
    """``n`` molecule indices (seeded, sorted) with ``lo <= natoms <= hi`` (hydrogens count);
    all of them if fewer exist."""
    natoms = (packed.ptr[1:] - packed.ptr[:-1]).numpy()
    pool = np.flatnonzero((natoms >= lo) & (natoms <= hi))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))


def remove_atoms(packed: PackedStructures, mols: np.ndarray, rng: np.random.Generator) -> CompletionExamples:
    """One example per molecule in ``mols``, removing one atom drawn uniformly by ``rng``."""
    table = torch.full((119,), -1, dtype=torch.long)
    table[torch.tensor(ELEMENTS)] = torch.arange(len(ELEMENTS))
    zs, ps, counts, tz, tp = [], [], [], [], []
    for k in mols:
        a, b = int(packed.ptr[k]), int(packed.ptr[k + 1])
        z, pos = packed.z[a:b].long(), packed.pos[a:b].float()
        r = int(rng.integers(b - a))
        keep = torch.ones(b - a, dtype=torch.bool)
        keep[r] = False
        zs.append(z[keep])
        ps.append(pos[keep])
        counts.append(b - a - 1)
        tz.append(table[z[r]])
        tp.append(pos[r])
    ptr = torch.zeros(len(mols) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.tensor(counts), 0)
    return CompletionExamples(torch.cat(zs), torch.cat(ps), ptr, torch.stack(tz), torch.stack(tp))


def _slice(ex: CompletionExamples, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, pos, batch, target_z, target_pos) of the examples ``idx``."""
    starts, ends = ex.ptr[idx], ex.ptr[idx + 1]
    atom = torch.cat([torch.arange(int(s), int(e)) for s, e in zip(starts, ends)])
    batch = torch.repeat_interleave(torch.arange(len(idx)), ends - starts)
    return ex.z[atom], ex.pos[atom], batch, ex.target_z[idx], ex.target_pos[idx]


def make_batch(z: torch.Tensor, pos: torch.Tensor, batch: torch.Tensor, cutoff: float) -> AtomGraph:
    """A non-periodic :class:`AtomGraph` (radius graph, ``cutoff`` Å) of molecules given flat."""
    G = int(batch.max()) + 1 if batch.numel() else 0
    edge_index = dense_radius_graph(pos, batch, cutoff)
    return AtomGraph(
        z=z,
        pos=pos,
        batch=batch,
        cell=torch.zeros(G, 3, 3),
        pbc=torch.zeros(G, 3, dtype=torch.bool),
        edge_index=edge_index,
        edge_shift=torch.zeros(edge_index.shape[1], 3),
        y=torch.zeros(G, 0),
        natoms=torch.bincount(batch, minlength=G),
        idx=torch.arange(G),
    )


class CompletionModel(nn.Module):
    """:class:`E3Encoder` layers + per-atom vote head (see module docstring).

    Args:
        irreps_hidden, lmax, num_layers, num_basis, radial_hidden: encoder sizes.
        cutoff: radius graph cutoff, Å.
    """

    def __init__(
        self,
        irreps_hidden: str = "32x0e + 16x1o + 8x2e",
        lmax: int = 2,
        num_layers: int = 3,
        num_basis: int = 8,
        radial_hidden: int = 64,
        cutoff: float = 5.0,
        avg_num_neighbors: float = 12.0,
    ) -> None:
        super().__init__()
        cfg = EncoderConfig(
            kind="e3nn", irreps_hidden=irreps_hidden, lmax=lmax, num_layers=num_layers, num_basis=num_basis,
            radial_hidden=radial_hidden, hidden=16, avg_num_neighbors=avg_num_neighbors,
        )
        self.cutoff = cutoff
        self.encoder = E3Encoder(cfg, cutoff, ELEMENTS, latent_dim=1)
        self.encoder.readout = nn.Identity()  # the latent readout is not used here
        n_el = len(ELEMENTS)
        self.n_el = n_el
        self.head = o3.Linear(self.encoder.irreps_out, o3.Irreps(f"{n_el + 1}x0e + 1x1o"))

    def forward(self, z: torch.Tensor, pos: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Remaining atoms (z [N], pos [N, 3] Å, batch [N] → example) → (log element
        probabilities [B, n_elements], predicted position [B, 3] Å)."""
        graph = make_batch(z, pos, batch, self.cutoff)
        h = self.head(self.encoder.node_features(graph)[-1])
        scores, conf, disp = h[:, : self.n_el], h[:, self.n_el], h[:, self.n_el + 1 :]
        B = int(graph.num_graphs)
        cmax = torch.full((B,), -torch.inf, dtype=conf.dtype).scatter_reduce(0, batch, conf, "amax")
        e = torch.exp(conf - cmax[batch])
        w = e / scatter_sum(e, batch, B)[batch]  # softmax over each molecule's atoms
        probs = scatter_sum(w.unsqueeze(-1) * torch.softmax(scores, -1), batch, B)
        xhat = scatter_sum(w.unsqueeze(-1) * (pos + disp), batch, B)
        return torch.log(probs.clamp_min(1e-12)), xhat


def completion_loss(logp: torch.Tensor, xhat: torch.Tensor, target_z: torch.Tensor, target_pos: torch.Tensor) -> torch.Tensor:
    """Mixture negative log-likelihood of the element + squared position error (Å²)."""
    return nn.functional.nll_loss(logp, target_z) + (xhat - target_pos).pow(2).sum(-1).mean()


@torch.no_grad()
def predict(model: CompletionModel, ex: CompletionExamples, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted element classes [B] and positions [B, 3] Å for all examples."""
    model.eval()
    zs, xs = [], []
    for s in range(0, len(ex), batch_size):
        z, pos, b, _, _ = _slice(ex, torch.arange(s, min(s + batch_size, len(ex))))
        logp, xhat = model(z, pos, b)
        zs.append(logp.argmax(-1))
        xs.append(xhat)
    return torch.cat(zs), torch.cat(xs)


def evaluate(model: CompletionModel, ex: CompletionExamples, tol: float = 0.5) -> dict[str, float]:
    """accuracy (element right and distance < ``tol`` Å), element accuracy, distance MAE (Å)
    and the fraction of removed atoms that were hydrogens."""
    zhat, xhat = predict(model, ex)
    dist = (xhat - ex.target_pos).norm(dim=-1)
    right = zhat == ex.target_z
    return {
        "accuracy": float((right & (dist < tol)).double().mean()),
        "element_accuracy": float(right.double().mean()),
        "distance_mae": float(dist.mean()),
        "n": len(ex),
        "frac_hydrogen": float((ex.target_z == 0).double().mean()),
    }


def train_completion(
    model: CompletionModel,
    packed: PackedStructures,
    mols: np.ndarray,
    epochs: int = 200,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    max_seconds: float | None = None,
    log_every: int = 0,
) -> dict[str, float]:
    """Train on ``mols``: each epoch removes a fresh random atom from every molecule (so each
    molecule is seen ``epochs`` times with different removed atoms). Adam with cosine decay.
    Stops early after ``max_seconds`` of wall time. Returns steps, epochs done, seconds."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = (len(mols) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.05)
    t0 = time.time()
    step = 0
    done = 0
    model.train()
    for ep in range(epochs):
        ex = remove_atoms(packed, mols, rng)
        order = torch.as_tensor(rng.permutation(len(ex)))
        running = 0.0
        for s in range(0, len(ex), batch_size):
            z, pos, b, tz, tp = _slice(ex, order[s : s + batch_size])
            loss = completion_loss(*model(z, pos, b), tz, tp)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += float(loss.detach())
        done = ep + 1
        if log_every and done % log_every == 0:
            print(f"epoch {done}/{epochs} loss {running / steps_per_epoch:.4f} ({time.time() - t0:.0f} s)", flush=True)
        if max_seconds is not None and time.time() - t0 > max_seconds:
            break
    model.eval()
    return {"steps": step, "epochs": done, "seconds": time.time() - t0}
