"""Hierarchical decoder for molecules: latent ``z`` → what → skeleton → detail.

1. **Global level** (:class:`GlobalLevel`): MLP heads on ``z`` give the element counts
   (H, C, N, O, F ...), hence the number of atoms and the composition.
2. **Coarse level**: the heavy-atom skeleton. A conditional flow-matching model (an e3nn
   :class:`~atomarch.nn.flows.VelocityNet` on the complete graph of heavy atoms) transports
   seeded Gaussian noise to heavy-atom positions along a deterministic ODE; element types are
   fixed by the global level. The same network's invariant outputs give the number of
   hydrogens of each heavy atom (read at t = 1).
3. **Fine level**: hydrogens start at their parent heavy atom plus seeded noise, and a second,
   short conditional flow (radius graph over all atoms) moves them into place while refining
   the heavy atoms (trained to remove ``refine_noise_std`` Å of noise).

Both flows predict the clean positions ``x1_hat`` from ``x_t`` (loss |x1_hat - x1|^2, which
weights precision near t = 1, where bond lengths are decided); the ODE velocity is
``(x1_hat - x_t) / (1 - t)``, integrated with Euler steps. Training uses teacher forcing
(each level gets the true level above); :meth:`sample` chains the levels. Everything is conditioned on ``z`` and equivariant in the noise: rotating the
noise draw rotates the decoded molecule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from torch import nn
from torch.nn import functional as F

from atomarch.config import DecoderConfig
from atomarch.data.graph import AtomGraph
from atomarch.data.neighbors import dense_radius_graph
from atomarch.nn.decoders.base import DecodeOptions, Decoder, Encode
from atomarch.nn.decoders.common import GlobalLevel, noise_seed, require_hydrogen, type_table
from atomarch.nn.flows import VelocityNet, center, ot_pair

MAX_H_PER_ATOM = 4


@dataclass
class Decoded:
    """Decoder output for G molecules (flat, N atoms): numbers [N], positions [N, 3] Å, batch [N]."""

    numbers: torch.Tensor
    positions: torch.Tensor
    batch: torch.Tensor
    num_graphs: int

    def to_atoms(self) -> list[Atoms]:
        """One ``ase.Atoms`` per molecule."""
        numbers, pos, b = self.numbers.cpu().numpy(), self.positions.cpu().double().numpy(), self.batch.cpu().numpy()
        return [Atoms(numbers=numbers[b == g], positions=pos[b == g]) for g in range(self.num_graphs)]


def h_parents(batch: AtomGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """For every hydrogen, its nearest heavy atom in the same molecule.

    Returns (h_atoms [H], parent [H]) as global atom indices.
    """
    is_h = batch.z == 1
    h_atoms = torch.nonzero(is_h).squeeze(-1)
    if h_atoms.numel() == 0:
        return h_atoms, h_atoms
    ei = dense_radius_graph(batch.pos, batch.batch, 2.5)
    src, dst = ei
    keep = is_h[dst] & ~is_h[src]
    src, dst = src[keep], dst[keep]
    d = (batch.pos[src] - batch.pos[dst]).norm(dim=-1)
    # nearest heavy atom per H: sort by (dst, d) and take the first of each dst
    order = torch.argsort(dst.double() * 1e3 + d.double())
    src, dst = src[order], dst[order]
    first = torch.ones_like(dst, dtype=torch.bool)
    first[1:] = dst[1:] != dst[:-1]
    parent = torch.full((batch.z.numel(),), -1, dtype=torch.long, device=batch.z.device)
    parent[dst[first]] = src[first]
    p = parent[h_atoms]
    if bool((p < 0).any()):
        # an H with no heavy atom within 2.5 Å (e.g. H2): attach to the nearest atom of its graph
        from atomarch.errors import StructureError

        g = int(batch.batch[h_atoms[p < 0][0]])
        raise StructureError(
            f"structure {g} has a hydrogen with no heavy atom within 2.5 Å; the molecule decoder "
            "needs every H bonded to a heavy atom"
        )
    return h_atoms, p


class HierarchicalDecoder(Decoder):
    """The three-level decoder (see module docstring).

    Args:
        cfg: decoder sizes and noise scales.
        atomic_numbers: the element vocabulary (must contain H = 1).
        latent_dim: size of z.
    """

    def __init__(self, cfg: DecoderConfig, atomic_numbers: list[int], latent_dim: int) -> None:
        super().__init__()
        require_hydrogen(atomic_numbers)
        self.cfg = cfg
        self.atomic_numbers = list(atomic_numbers)
        self.h_type = self.atomic_numbers.index(1)
        self.register_buffer("type_of_z", type_table(atomic_numbers), persistent=False)
        self.register_buffer("z_of_type", torch.tensor(atomic_numbers), persistent=False)
        n_types = len(atomic_numbers)
        self.global_level = GlobalLevel(latent_dim, n_types, cfg.max_count)
        self.coarse = VelocityNet(
            cfg.coarse_irreps, cfg.coarse_lmax, cfg.coarse_layers, cfg.num_basis, cfg.radial_hidden,
            cfg.coarse_cutoff, n_types, latent_dim, num_logits=MAX_H_PER_ATOM + 1, avg_num_neighbors=8.0,
        )
        self.fine = VelocityNet(
            cfg.fine_irreps, cfg.fine_lmax, cfg.fine_layers, cfg.num_basis, cfg.radial_hidden,
            cfg.fine_cutoff, n_types, latent_dim, num_extra=1, avg_num_neighbors=15.0,
        )

    # ------------------------------------------------------------ training
    def losses(self, batch: AtomGraph, z: torch.Tensor, t_fixed: float | None = None) -> dict[str, torch.Tensor]:
        """Teacher-forced losses of every level for a batch of molecules and their latents z [G, d].

        ``t_fixed`` fixes the flow time of both flows (diagnostics); by default it is uniform per molecule."""
        G = batch.num_graphs
        types = self.type_of_z[batch.z]
        out: dict[str, torch.Tensor] = {}

        # global: element counts
        counts = torch.zeros(G, len(self.atomic_numbers), dtype=torch.long, device=z.device)
        counts.index_put_((batch.batch, types), torch.ones_like(types), accumulate=True)
        logits = self.global_level(z)
        out["global"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), counts.clamp_max(self.cfg.max_count).reshape(-1))
        out["global_acc"] = (logits.argmax(-1) == counts).all(-1).float().mean()

        # coarse: heavy-atom skeleton flow (+ H counts per heavy atom)
        heavy = types != self.h_type
        hb = batch.batch[heavy]
        x1 = center(batch.pos[heavy], hb, G)
        h_atoms, parent = h_parents(batch)
        n_h = torch.zeros(batch.z.numel(), dtype=torch.long, device=z.device)
        n_h.index_add_(0, parent, torch.ones_like(parent))
        n_h_heavy = n_h[heavy].clamp_max(MAX_H_PER_ATOM)
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        x0 = center(torch.randn(x1.shape, generator=gen).to(x1) * self.cfg.noise_std, hb, G)
        if self.cfg.ot_pairing:
            x1, n_h_heavy = self._pair(x0, x1, types[heavy], hb, n_h_heavy)
        t_draw = torch.rand(G, generator=gen).to(x1)
        t = t_draw if t_fixed is None else torch.full_like(t_draw, t_fixed)
        tn = t[hb].unsqueeze(-1)
        xt = (1 - tn) * x0 + tn * x1
        sc = None
        if self.cfg.self_condition and bool(torch.rand(1, generator=gen) < 0.5):
            with torch.no_grad():  # self-conditioning: half the time, first predict without it
                d0, _ = self.coarse(xt, types[heavy], hb, t, z)
                sc = xt + center(d0, hb, G)
        d, hlogits = self.coarse(xt, types[heavy], hb, t, z, self_cond=sc)
        x1_hat = xt + center(d, hb, G)  # the network predicts the clean skeleton
        out["coarse"] = self._weighted(x1_hat - x1, t[hb])
        w = t[hb]  # H counts are only identifiable once the skeleton has formed
        ce = F.cross_entropy(hlogits, n_h_heavy, reduction="none")
        out["hcount"] = (w * ce).sum() / w.sum().clamp_min(1e-6)
        out["hcount_acc"] = ((hlogits.argmax(-1) == n_h_heavy).float() * (w > 0.8)).sum() / (w > 0.8).sum().clamp_min(1)

        # fine: hydrogens from their parents + refinement of everything
        x1f = center(batch.pos, batch.batch, G, mask=heavy)  # the skeleton's frame
        x0f = x1f + torch.randn(x1f.shape, generator=gen).to(x1f) * self.cfg.refine_noise_std
        if h_atoms.numel():
            x0f[h_atoms] = x1f[parent] + torch.randn((h_atoms.numel(), 3), generator=gen).to(x1f) * self.cfg.h_noise_std
        tf = torch.rand(G, generator=gen).to(x1f) if t_fixed is None else torch.full((G,), t_fixed).to(x1f)
        tfn = tf[batch.batch].unsqueeze(-1)
        xtf = (1 - tfn) * x0f + tfn * x1f
        extra = (~heavy).float().unsqueeze(-1)
        scf = None
        if self.cfg.self_condition and bool(torch.rand(1, generator=gen) < 0.5):
            with torch.no_grad():
                scf = xtf + self.fine(xtf, types, batch.batch, tf, z, extra=extra)[0]
        df, _ = self.fine(xtf, types, batch.batch, tf, z, extra=extra, self_cond=scf)
        out["fine"] = self._weighted(xtf + df - x1f, tf[batch.batch])
        return out

    def _weighted(self, err: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean over atoms of min(1/(1-t)^2, cap) * |err|^2 (err [n, 3] Å, t [n]), normalised by
        the mean weight so the loss stays in Å^2 of the clean-position error."""
        w = (1.0 - t).clamp_min(1e-4).pow(-2).clamp_max(self.cfg.time_weight_cap)
        return (w * err.pow(2).sum(-1)).sum() / w.sum().clamp_min(1e-8)

    def _pair(self, x0, x1, types, batch, n_h):
        """Optimal-transport pairing per molecule (numpy; molecules have <= ~10 heavy atoms)."""
        x0n, x1n, tn, bn = x0.detach().cpu().numpy(), x1.detach().cpu().numpy(), types.cpu().numpy(), batch.cpu().numpy()
        nh = n_h.cpu().numpy()
        new_x1 = np.empty_like(x1n)
        new_nh = np.empty_like(nh)
        starts = np.searchsorted(bn, np.arange(bn.max() + 1 if len(bn) else 0))
        ends = np.append(starts[1:], len(bn))
        for a, b in zip(starts, ends):
            if b <= a:
                continue
            perm, R = ot_pair(x0n[a:b], x1n[a:b], tn[a:b])
            new_x1[a:b] = x1n[a:b][perm] @ R.T
            new_nh[a:b] = nh[a:b][perm]
        return torch.as_tensor(new_x1).to(x1), torch.as_tensor(new_nh).to(n_h)

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        z: torch.Tensor,
        seed: int = 0,
        noise_rotation: torch.Tensor | None = None,
        coarse_steps: int | None = None,
        fine_steps: int | None = None,
    ) -> Decoded:
        """Decode latents z [G, d] with seeded noise (the same noise stream for every molecule,
        so that smoothly varying z give smoothly varying structures).

        ``noise_rotation`` [3, 3] rotates every noise vector (for equivariance checks)."""
        device = z.device
        G = z.shape[0]
        cs = self.cfg.coarse_steps if coarse_steps is None else coarse_steps
        fs = self.cfg.fine_steps if fine_steps is None else fine_steps
        # 1. global: composition
        logits = self.global_level(z)
        counts = logits.argmax(-1)  # [G, n_types]
        heavy_types = [t for t in range(len(self.atomic_numbers)) if t != self.h_type]
        for g in range(G):
            if counts[g, heavy_types].sum() == 0:  # at least one heavy atom
                best = max(heavy_types, key=lambda t: float(logits[g, t, 1]))
                counts[g, best] = 1
        # 2. coarse: skeleton
        types_list, batch_list = [], []
        for g in range(G):
            for t in heavy_types:
                types_list += [t] * int(counts[g, t])
                batch_list += [g] * int(counts[g, t])
        types = torch.tensor(types_list, dtype=torch.long, device=device)
        hb = torch.tensor(batch_list, dtype=torch.long, device=device)
        noise = self._noise(hb, seed, 0, noise_rotation, self._noise_rows()).to(device)
        x = center(noise * self.cfg.noise_std, hb, G)
        sc = None
        for k in range(cs):
            t = torch.full((G,), k / cs, device=device)
            d, _ = self.coarse(x, types, hb, t, z, self_cond=sc)
            d = center(d, hb, G)
            sc = x + d if self.cfg.self_condition else None
            x = x + d / (cs - k)  # Euler step of v = (x1_hat - x) / (1 - t)
        _, hlogits = self.coarse(x, types, hb, torch.ones(G, device=device), z, self_cond=sc)
        n_h_total = counts[:, self.h_type]
        n_h = constrained_h_counts(hlogits, hb, n_h_total, G)
        # 3. fine: hydrogens + refinement
        parent = torch.repeat_interleave(torch.arange(len(types), device=device), n_h)
        # order atoms per molecule: heavy atoms, then their hydrogens
        all_types = torch.cat([types, torch.full((parent.numel(),), self.h_type, dtype=torch.long, device=device)])
        all_batch = torch.cat([hb, hb[parent]])
        h_noise = self._noise(hb[parent], seed, 1, noise_rotation, self._noise_rows()).to(device)
        pos = torch.cat([x, x[parent] + h_noise * self.cfg.h_noise_std])
        order = torch.argsort(all_batch * 2 + (all_types == self.h_type).long(), stable=True)
        all_types, all_batch, pos = all_types[order], all_batch[order], pos[order]
        is_h = (all_types == self.h_type).float().unsqueeze(-1)
        scf = None
        for k in range(fs):
            t = torch.full((G,), k / fs, device=device)
            d, _ = self.fine(pos, all_types, all_batch, t, z, extra=is_h, self_cond=scf)
            scf = pos + d if self.cfg.self_condition else None
            pos = pos + d / (fs - k)
        return Decoded(self.z_of_type[all_types], pos, all_batch, G)

    def decode(self, z: torch.Tensor, options: DecodeOptions, encode: Encode | None = None) -> list[Atoms]:
        """Latents [G, d] → G molecules (:meth:`sample`, as ``ase.Atoms``); ``encode`` is not used."""
        rot = options.noise_rotation
        rot = None if rot is None else torch.as_tensor(np.asarray(rot), dtype=torch.float32)
        out = self.sample(z, seed=options.seed, noise_rotation=rot, coarse_steps=options.coarse_steps,
                          fine_steps=options.fine_steps)
        return out.to_atoms()

    def _noise_rows(self) -> int:
        """Rows of the per-molecule noise block: more than any molecule can have atoms."""
        return self.cfg.max_count * len(self.atomic_numbers)

    @staticmethod
    def _noise(batch: torch.Tensor, seed: int, stream: int, rotation: torch.Tensor | None, rows: int) -> torch.Tensor:
        """Per-molecule noise [n, 3]: the k-th atom of every molecule gets row k of one fixed-size
        block [rows, 3] drawn from a generator seeded by (seed, stream). The block does not depend
        on the other molecules of the call, so a molecule decodes the same alone or in a batch."""
        if batch.numel() == 0:
            return torch.zeros(0, 3)
        counts = torch.bincount(batch.cpu())
        if int(counts.max()) > rows:
            raise ValueError(f"a molecule with {int(counts.max())} atoms exceeds the noise block ({rows})")
        gen = torch.Generator().manual_seed(noise_seed(seed, stream))
        base = torch.randn(rows, 3, generator=gen)
        starts = torch.cumsum(counts, 0) - counts
        local = torch.arange(batch.numel()) - starts[batch.cpu()]
        noise = base[local]
        if rotation is not None:
            noise = noise @ rotation.to(noise).T
        return noise


def constrained_h_counts(logits: torch.Tensor, batch: torch.Tensor, total: torch.Tensor, G: int) -> torch.Tensor:
    """Hydrogens per heavy atom maximising the summed log-probability subject to each
    molecule's total (from the global level), by dynamic programming over its atoms.

    logits [n, K+1], batch [n], total [G] → counts [n] (long). Falls back to the argmax when
    the total cannot be met."""
    logp = torch.log_softmax(logits, dim=-1).cpu().numpy()
    b = batch.cpu().numpy()
    tot = total.cpu().numpy()
    out = logp.argmax(-1)
    K = logp.shape[1] - 1
    for g in range(G):
        idx = np.where(b == g)[0]
        T = int(tot[g])
        if len(idx) == 0 or T > K * len(idx):
            continue
        # best[i][s]: best log-prob of the first i atoms holding s hydrogens
        best = np.full((len(idx) + 1, T + 1), -np.inf)
        choice = np.zeros((len(idx) + 1, T + 1), dtype=int)
        best[0, 0] = 0.0
        for i, a in enumerate(idx):
            for s in range(T + 1):
                if best[i, s] == -np.inf:
                    continue
                for k in range(min(K, T - s) + 1):
                    v = best[i, s] + logp[a, k]
                    if v > best[i + 1, s + k]:
                        best[i + 1, s + k] = v
                        choice[i + 1, s + k] = k
        if best[len(idx), T] == -np.inf:
            continue
        s = T
        for i in range(len(idx), 0, -1):
            k = choice[i, s]
            out[idx[i - 1]] = k
            s -= k
    return torch.as_tensor(out, dtype=torch.long, device=logits.device)
