"""Symmetry-first hierarchical decoder for crystals: latent ``z`` → composition → space group and
Wyckoff orbits → lattice and free coordinates → a periodic ``ase.Atoms``.

1. **Global level** (:class:`~atomarch.nn.decoders.common.GlobalLevel`): atoms per element in
   the primitive cell (size and composition).
2. **Skeleton level** (:class:`~atomarch.nn.decoders.sequence.SkeletonLevel`): a GRU conditioned
   on ``z`` and the composition writes ``SG<n>, El, @letter, El, @letter, ..., <eos>``
   (:class:`~atomarch.chem.symmetry.SkeletonTokens`). Beam search runs under a grammar
   (:class:`SkeletonGrammar`): the letters the group has, orbits in canonical order, a position
   without free parameters used at most once, and the multiplicities adding up to exactly the
   composition it was written for. Every skeleton therefore is a complete crystal with that
   composition: the levels agree by construction, as SELFIES make every molecule skeleton valid.
3. **Detail level** (:class:`DetailLevel`): a bidirectional GRU over the skeleton's tokens, with
   ``z``, predicts the lattice parameters (ln a, b, c; angles) and every orbit's free Wyckoff
   coordinates; pyxtal builds the crystal (:func:`atomarch.chem.symmetry.build`), reduced to its
   Niggli primitive cell; optionally relaxed with the pretrained CHGNet (``relax: chgnet``).

The decoder proposes, the encoder verifies: every candidate (compositions × beams) is built and
the one whose re-encoding is closest to ``z`` is kept. No noise is involved: decoding a latent
always gives the same crystal, whatever the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from torch import nn
from torch.nn import functional as F

from atomarch.chem.symmetry import LETTERS, SkeletonTokens, build, from_free, group_info, lattice_from_features
from atomarch.config import DecoderConfig
from atomarch.data.graph import AtomGraph
from atomarch.errors import StructureError
from atomarch.nn.decoders.base import DecodeOptions, Decoder, Encode
from atomarch.nn.decoders.common import FormulaLevel, GlobalLevel, type_table
from atomarch.nn.decoders.sequence import SkeletonLevel
from atomarch.nn.readout import mlp

LATTICE_SCALE = torch.tensor([0.05, 0.05, 0.05, 0.05, 0.05, 0.05])
"""Error scale of the lattice targets (ln Å and radians): Huber loss on err / scale."""
COORD_SCALE = 0.05
"""Error scale of the free fractional coordinates (periodic distance)."""
MAX_REACH = 96
"""Largest per-element atom count the grammar's look-ahead tables cover."""


class SkeletonTables:
    """Per-group tensors the grammar needs, over the 27 letters of :data:`LETTERS`:
    ``valid`` [230, 27] (the group has the letter), ``count`` [230, 27] (atoms it places in the
    primitive cell: multiplicity / centring), ``fixed`` [230, 27] (no free parameter)."""

    def __init__(self) -> None:
        valid = np.zeros((230, len(LETTERS)), dtype=bool)
        count = np.zeros((230, len(LETTERS)), dtype=np.int64)
        fixed = np.zeros((230, len(LETTERS)), dtype=bool)
        for n in range(1, 231):
            info = group_info(n)
            for letter, (mult, dof) in info.positions.items():
                j = LETTERS.index(letter)
                valid[n - 1, j], count[n - 1, j], fixed[n - 1, j] = True, mult // info.centering, dof == 0
        self.valid, self.count, self.fixed = (torch.from_numpy(valid), torch.from_numpy(count), torch.from_numpy(fixed))
        order = sorted(LETTERS)  # the canonical orbit order compares letters as strings
        self.letter_rank = torch.tensor([order.index(c) for c in LETTERS])
        # reach[g, n]: n atoms of one element fit group g's positions (free ones any number of
        # times, fixed ones once each): the look-ahead that keeps beams out of dead ends
        reach = np.zeros((230, MAX_REACH + 1), dtype=bool)
        reach[:, 0] = True
        for g in range(230):
            for j in np.nonzero(valid[g])[0]:
                c = int(count[g, j])
                if c == 0 or c > MAX_REACH:
                    continue
                if fixed[g, j]:  # 0/1 knapsack step
                    reach[g, c:] |= reach[g, :-c].copy()
                else:  # unbounded
                    for n in range(c, MAX_REACH + 1):
                        reach[g, n] |= reach[g, n - c]
        self.reach = torch.from_numpy(reach)


class SkeletonGrammar:
    """The beam-search grammar of crystal skeletons (see module docstring), one row per
    (latent, beam): ``counts`` [rows, T] is the composition (primitive cell) each row must write."""

    def __init__(self, vocab: SkeletonTokens, tables: SkeletonTables, counts: torch.Tensor, element_rank: torch.Tensor) -> None:
        self.v, self.t = vocab, tables
        rows = len(counts)
        self.remaining = counts.long().clone()
        self.element_rank = element_rank
        self.sg = torch.zeros(rows, dtype=torch.long)  # 0-based group index once written
        self.pending = torch.zeros(rows, dtype=torch.long)  # element of the orbit being written
        self.prev_el = torch.full((rows,), -1, dtype=torch.long)  # element of the last complete orbit
        self.prev_rank = torch.full((rows,), -1, dtype=torch.long)  # its element rank
        self.prev_letter = torch.full((rows,), -1, dtype=torch.long)  # its letter rank
        self.used_fixed = torch.zeros(rows, len(LETTERS), dtype=torch.bool)

    def allowed(self, step: int) -> torch.Tensor:
        v, T = self.v, self.remaining.shape[1]
        mask = torch.zeros(len(self.remaining), len(v), dtype=torch.bool)
        if step == 0:  # groups whose positions can hold every element's count
            rem = self.remaining.clamp(max=MAX_REACH)
            fits = self.t.reach.T[rem]  # [rows, T, 230]
            mask[:, v.sg0 : v.el0] = (fits | (rem == 0).unsqueeze(-1)).all(1)
        elif step % 2 == 1:  # an element (canonical order: by symbol), or the end once all atoms are placed
            ok = (self.remaining > 0) & (self.element_rank.unsqueeze(0) >= self.prev_rank.unsqueeze(1))
            mask[:, v.el0 : v.el0 + T] = ok
            mask[:, v.EOS] = (self.remaining.sum(1) == 0) & (step >= 3)
        else:  # a letter for the pending element
            need = self.remaining.gather(1, self.pending.unsqueeze(1))
            count, fixed = self.t.count[self.sg], self.t.fixed[self.sg]
            ok = self.t.valid[self.sg] & (count <= need) & ~(fixed & self.used_fixed)
            left = (need - count).clamp(0, MAX_REACH)
            ok &= self.t.reach[self.sg.unsqueeze(1), left]  # what is left of the element must still fit
            same = (self.pending == self.prev_el).unsqueeze(1)
            ok &= ~same | (self.t.letter_rank.unsqueeze(0) >= self.prev_letter.unsqueeze(1))
            mask[:, v.letter0 :] = ok
        return mask

    def advance(self, parent: torch.Tensor, tok: torch.Tensor) -> None:
        v = self.v
        for name in ("remaining", "sg", "pending", "prev_el", "prev_rank", "prev_letter", "used_fixed"):
            setattr(self, name, getattr(self, name)[parent].clone())
        is_sg = (tok >= v.sg0) & (tok < v.el0)
        self.sg = torch.where(is_sg, tok - v.sg0, self.sg)
        is_el = (tok >= v.el0) & (tok < v.letter0)
        self.pending = torch.where(is_el, tok - v.el0, self.pending)
        is_letter = tok >= v.letter0
        if bool(is_letter.any()):
            rows = torch.nonzero(is_letter).squeeze(1)
            j = tok[rows] - v.letter0
            sg, el = self.sg[rows], self.pending[rows]
            self.remaining[rows, el] -= self.t.count[sg, j]
            self.used_fixed[rows, j] |= self.t.fixed[sg, j]
            self.prev_el[rows] = el
            self.prev_rank[rows] = self.element_rank[el]
            self.prev_letter[rows] = self.t.letter_rank[j]


class DetailLevel(nn.Module):
    """Skeleton tokens [G, L] (+ z [G, d]) → lattice features [G, 6] and free coordinates
    [G, O, 3] of the orbits (a bidirectional GRU reads the whole skeleton)."""

    def __init__(self, vocab_size: int, latent_dim: int, hidden: int, token_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, token_dim, padding_idx=0)
        self.cond = mlp([latent_dim, hidden, hidden])
        self.gru = nn.GRU(token_dim + hidden, hidden // 2, 2, batch_first=True, bidirectional=True, dropout=dropout)
        self.lattice = mlp([hidden + latent_dim, hidden, hidden, 6])
        self.coords = mlp([hidden + latent_dim, hidden, hidden, 3])

    def forward(self, z: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = tokens != 0
        lengths = mask.sum(1).clamp_min(1)
        c = self.cond(z)
        x = torch.cat([self.embed(tokens), c.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=-1)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.gru(packed)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=tokens.shape[1])
        pooled = (y * mask.unsqueeze(-1)).sum(1) / lengths.unsqueeze(-1)
        lattice = self.lattice(torch.cat([pooled, z], dim=-1))
        letters = y[:, 2::2]  # orbit j's letter sits at position 2 + 2j
        free = self.coords(torch.cat([letters, z.unsqueeze(1).expand(-1, letters.shape[1], -1)], dim=-1))
        return lattice, free


class SymmetryDecoder(Decoder):
    """The symmetry-first crystal decoder (see module docstring).

    Args:
        cfg: sizes, beams, compositions, the detail-level relaxation (``chgnet`` or ``none``).
        atomic_numbers: the element vocabulary (composition heads and element tokens).
        latent_dim: size of z.
    """

    decode_batch_size = 32
    periodic = True

    def __init__(self, cfg: DecoderConfig, atomic_numbers: list[int], latent_dim: int) -> None:
        super().__init__()
        from ase.data import chemical_symbols

        if cfg.relax not in ("chgnet", "none"):
            raise ValueError(f"the symmetry decoder relaxes with 'chgnet' or 'none', not {cfg.relax!r} "
                             "(set model.decoder.relax)")
        self.cfg = cfg
        self.atomic_numbers = list(atomic_numbers)
        self.symbols = [chemical_symbols[zz] for zz in atomic_numbers]
        self.vocab = SkeletonTokens(self.symbols)
        self.register_buffer("type_of_z", type_table(atomic_numbers), persistent=False)
        order = sorted(self.symbols)
        self.register_buffer("element_rank", torch.tensor([order.index(s) for s in self.symbols]), persistent=False)
        T = len(atomic_numbers)
        self.global_level: GlobalLevel | FormulaLevel = (
            FormulaLevel(latent_dim, T, cfg.max_count) if cfg.composition == "formula"
            else GlobalLevel(latent_dim, T, cfg.max_count))
        self.skeleton = SkeletonLevel(len(self.vocab), latent_dim, T, cfg)
        self.detail = DetailLevel(len(self.vocab), latent_dim, cfg.gru_hidden, cfg.token_dim, cfg.dropout)
        self._tables: SkeletonTables | None = None

    @classmethod
    def attach_targets(cls, dm, cfg, stored_vocab: list[str] | None = None) -> None:
        """Give the data module's structures their skeleton targets (see
        :meth:`~atomarch.data.datamodule.StructureDataModule.attach_skeleton_targets`)."""
        missing = dm.attach_skeleton_targets(list(cfg.elements), cfg.decoder.max_length, cfg.decoder.max_count)
        print(f"[atomarch] crystal skeletons: structures without a target (symmetry not perceived, too many "
              f"orbits or atoms): {missing}", flush=True)
        return None

    @torch.no_grad()
    def init_from_data(self, dm, warm: frozenset[str] = frozenset()) -> None:
        """Start the composition heads at the training split's per-element count marginals
        (output bias = log frequency, output weights × 0.1) and the lattice head at the mean
        lattice features. With 87 elements × 21 count classes, a head started at zero costs
        ~265 nats per crystal; its first large gradients left MP-20 runs stuck on the marginal
        (~16.6 nats) for thousands of steps, while this start learns in hundreds (measured on
        MP-20 compositions). A head with a parameter in ``warm`` (copied by a warm start) is
        left as it is."""
        if getattr(dm, "targets", None) is None:
            return
        idx = torch.as_tensor(dm.split["train"])
        has = dm.tokens[idx][:, 0] != 0
        if not bool(has.any()):
            return
        if not any(n.startswith("global_level.") for n in warm):
            self.global_level.init_marginals(dm.targets["counts"][idx][has].long())  # [n, T]
        if any(n.startswith("detail.lattice.") for n in warm):
            return
        lat = self.detail.lattice[-1]
        lat.bias.copy_(dm.targets["lattice"][idx][has].float().mean(0).to(lat.bias))
        lat.weight.mul_(0.1)

    @property
    def tables(self) -> SkeletonTables:
        if self._tables is None:
            self._tables = SkeletonTables()
        return self._tables

    # ------------------------------------------------------------------ training
    def counts(self, batch: AtomGraph) -> torch.Tensor:
        """Atoms per element [G, T] of the batch's cells."""
        onehot = F.one_hot(self.type_of_z[batch.z], len(self.atomic_numbers)).float()
        return torch.zeros(batch.num_graphs, onehot.shape[1], device=onehot.device).index_add_(0, batch.batch, onehot)

    def losses(self, batch: AtomGraph, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher-forced losses per crystal: ``global`` (composition, nats), ``coarse``
        (skeleton tokens, nats), ``fine`` = ``lattice`` + ``coords`` (Huber on the lattice
        features / :data:`LATTICE_SCALE`; squared periodic distance / :data:`COORD_SCALE` to the
        nearest equivalent representative of each orbit), plus token accuracies."""
        if batch.tokens is None or batch.targets is None:
            raise ValueError("the symmetry decoder needs skeleton targets in the batch (datamodule.attach_skeleton_targets)")
        t, tokens = batch.targets, batch.tokens
        has = tokens[:, 0] != 0
        counts = torch.where(has.unsqueeze(1), t["counts"].float(), self.counts(batch))
        glob = self.global_level.nll(z, counts)
        out = {"global": glob.sum() / len(z)}
        if not bool(has.any()):
            zero = glob.sum() * 0.0
            out.update(coarse=zero, fine=zero, lattice=zero, coords=zero, coarse_acc=zero.detach(),
                       coarse_seq_acc=zero.detach())
            return out
        tokens, zh, n = tokens[has], z[has], int(has.sum())
        length = int((tokens != 0).sum(1).max())
        tokens = tokens[:, :length]
        bos = torch.full_like(tokens[:, :1], self.vocab.BOS)
        pred = self.skeleton(zh, counts[has], torch.cat([bos, tokens[:, :-1]], dim=1))
        mask = tokens != 0
        ce = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), tokens.reshape(-1), reduction="none").view_as(tokens)
        out["coarse"] = (ce * mask).sum() / n
        correct = (pred.argmax(-1) == tokens) | ~mask
        out["coarse_acc"] = ((correct & mask).sum() / mask.sum()).detach()
        out["coarse_seq_acc"] = correct.all(1).float().mean().detach()
        lattice, free = self.detail(zh, tokens)
        scale = LATTICE_SCALE.to(z.device)
        out["lattice"] = F.smooth_l1_loss(lattice / scale, t["lattice"][has] / scale, reduction="sum") / n
        O = free.shape[1]
        target, rep_mask, dof = t["free"][has][:, :O], t["free_mask"][has][:, :O], t["dof"][has][:, :O].long()
        d = free.unsqueeze(2) - target  # [n, O, R, 3]
        d = d - torch.round(d)
        axes = (torch.arange(3, device=z.device).view(1, 1, 1, 3) < dof.view(n, O, 1, 1)).float()
        per_rep = ((d / COORD_SCALE).pow(2) * axes).sum(-1).masked_fill(~rep_mask, float("inf"))
        best = per_rep.min(-1).values
        orbit = rep_mask.any(-1)
        out["coords"] = torch.where(orbit, best, torch.zeros_like(best)).sum() / n
        out["fine"] = out["lattice"] + out["coords"]
        return out

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def compositions(self, z: torch.Tensor, k: int, min_ratio: float = 1e-3,
                     charge_balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The global level's ``k`` most likely compositions [G, k, T] and their log-probabilities
        [G, k]; compositions below ``min_ratio`` of the best, or without atoms, get -inf.

        ``charge_balanced``: the ``k`` most likely of the ``8 k`` best that pass SMACT's
        charge-neutrality + electronegativity test (:func:`atomarch.metrics.crystals.composition_valid`;
        ``min_ratio`` then counts from the best that passes); a latent with none keeps the
        unscreened list."""
        if not charge_balanced:
            counts, lp = self.global_level.top_k(z, k)
            lp = lp.masked_fill(lp < lp[:, :1] + float(np.log(min_ratio)), float("-inf"))
            return counts, lp.masked_fill(counts.sum(-1) == 0, float("-inf"))
        from atomarch.metrics.crystals import counts_valid

        counts, lp = self.global_level.top_k(z, 8 * k)
        lp = lp.masked_fill(counts.sum(-1) == 0, float("-inf"))
        ok = torch.tensor([[bool(torch.isfinite(lp[g, r])) and counts_valid(self.symbols, counts[g, r].tolist())
                            for r in range(counts.shape[1])] for g in range(counts.shape[0])],
                          dtype=torch.bool, device=lp.device).reshape(lp.shape)
        ok = torch.where(ok.any(1, keepdim=True), ok, torch.ones_like(ok))  # none passes: unscreened
        screened = lp.masked_fill(~ok, float("-inf"))
        # stable order: the passing compositions first, each group by probability
        order = torch.argsort(torch.where(ok, lp, lp - 1e9), dim=1, descending=True, stable=True)[:, :k]
        counts = counts.gather(1, order.unsqueeze(-1).expand(-1, -1, counts.shape[-1]))
        lp = screened.gather(1, order)
        return counts, lp.masked_fill(lp < lp[:, :1] + float(np.log(min_ratio)), float("-inf"))

    def _formula(self, counts: Sequence[int]) -> str:
        return "".join(f"{s}{int(c)}" for s, c in zip(self.symbols, counts) if c > 0)

    @torch.no_grad()
    def candidates(self, z: torch.Tensor, beams: int, n_compositions: int, per_composition: int = 0,
                   charge_balanced: bool = False,
                   proposed: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[list[tuple[float, int, list[int]]]]:
        """Per latent, skeleton candidates ``(log-probability, composition rank, token ids)``,
        best first: a grammar-constrained beam search of width ``beams`` for each of the
        ``n_compositions`` most likely compositions (one batched call), of which the
        ``per_composition`` most likely of each composition are kept (0: ``ceil(beams /
        n_compositions)``, about ``beams`` candidates in all), so the encoder verifies every
        proposed composition; ``charge_balanced``: see :meth:`compositions`. ``proposed``: the
        ``(counts [G, k, T], log-probabilities [G, k])`` of :meth:`compositions`, when the caller
        already has them (then ``n_compositions`` and ``charge_balanced`` are not used)."""
        comps, lp = proposed if proposed is not None else self.compositions(z, n_compositions, charge_balanced=charge_balanced)
        pairs = [(g, r) for g in range(len(z)) for r in range(comps.shape[1]) if torch.isfinite(lp[g, r])]
        out: list[list[tuple[float, int, list[int]]]] = [[] for _ in range(len(z))]
        if not pairs:
            return out
        gi = torch.tensor([g for g, _ in pairs], dtype=torch.long, device=z.device)
        ri = torch.tensor([r for _, r in pairs], dtype=torch.long, device=z.device)
        rows_counts = comps[gi, ri]
        grammar = SkeletonGrammar(self.vocab, self.tables, rows_counts.repeat_interleave(beams, 0).cpu(),
                                  self.element_rank.cpu())
        rows, scores = self.skeleton.beam(z[gi], rows_counts, self.vocab.BOS, self.vocab.EOS, self.cfg.max_length,
                                          beams, grammar=grammar, return_scores=True)
        for (g, r), seqs, sc in zip(pairs, rows, scores):
            for ids, s in zip(seqs, sc):
                out[g].append((float(s) + float(lp[g, r]), r, ids))
        per_composition = int(per_composition) or -(-beams // n_compositions)  # the verifier sees every composition
        for g in range(len(z)):
            seen, uniq, taken = set(), [], {}
            for item in sorted(out[g], key=lambda c: -c[0]):
                if tuple(item[2]) not in seen and taken.get(item[1], 0) < per_composition:
                    seen.add(tuple(item[2]))
                    taken[item[1]] = taken.get(item[1], 0) + 1
                    uniq.append(item)
            out[g] = uniq
        return out

    @torch.no_grad()
    def realize(self, z: torch.Tensor, token_rows: Sequence[Sequence[int]]) -> list[tuple[Atoms | None, str]]:
        """Detail level: skeleton token ids (one row per latent in ``z``) → built crystals
        (Niggli primitive cell; None where pyxtal cannot build it) and their skeleton strings."""
        if not token_rows:
            return []
        L = max(len(r) for r in token_rows) + 1
        tokens = torch.zeros(len(token_rows), L, dtype=torch.long, device=z.device)
        for k, ids in enumerate(token_rows):
            tokens[k, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
            tokens[k, len(ids)] = self.vocab.EOS
        lattice, free = self.detail(z, tokens)
        out = []
        for k, ids in enumerate(token_rows):
            parsed = self.vocab.decode(ids)
            if parsed is None:
                out.append((None, ""))
                continue
            sg, orbits = parsed
            label = f"SG{sg} " + " ".join(f"{el}:{letter}" for el, letter in orbits)
            try:
                sk = from_free(sg, orbits, lattice_from_features(lattice[k].tolist()), free[k, : len(orbits)].tolist())
                atoms = build(sk)
            except StructureError:
                atoms = None
            out.append((atoms, label))
        return out

    def decode(self, z: torch.Tensor, options: DecodeOptions, encode: Encode | None = None) -> list[Atoms]:
        """Latents [G, d] → G crystals (periodic ``ase.Atoms``, Niggli primitive cell).

        ``atoms.info``: ``skeleton`` (space group and orbits), ``space_group``,
        ``formula_global`` (the composition it was written for), ``composition_rank``,
        ``skeleton_rank`` (rank of the kept candidate by probability), ``candidates`` (how
        many were built), ``structure_valid`` (all distances > 0.5 Å), ``levels_agree`` (True:
        the grammar makes every skeleton carry its composition) and, with ``relax: chgnet``,
        ``relax_delta`` (eV/atom, relaxed − unrelaxed CHGNet energy)."""
        from atomarch.metrics.crystals import structure_valid

        relax = options.relax or self.cfg.relax
        if relax not in ("chgnet", "none"):
            raise ValueError(f"crystals relax with 'chgnet' or 'none', not {relax!r}")
        beams = max(1, int(options.beams if options.beams is not None else self.cfg.beams))
        n_comp = max(1, int(options.compositions if options.compositions is not None else self.cfg.compositions))
        per = options.skeletons if options.skeletons is not None else self.cfg.skeletons
        if per < 0:
            raise ValueError(f"skeletons per composition must be >= 0, not {per}")
        balanced = bool(options.charge_balanced if options.charge_balanced is not None else self.cfg.charge_balanced)
        proposed = self.compositions(z, n_comp, charge_balanced=balanced)
        comps = proposed[0]
        cands = self.candidates(z, beams, n_comp, per, proposed=proposed)
        if encode is None:  # without a verifier, keep the most likely skeleton
            cands = [c[:1] for c in cands]
        owner = [(g, k) for g, c in enumerate(cands) for k in range(len(c))]
        built = self.realize(z[torch.tensor([g for g, _ in owner], dtype=torch.long)] if owner else z[:0],
                             [cands[g][k][2] for g, k in owner])
        valid = [a is not None and structure_valid(a) for a, _ in built]
        pick: dict[int, int] = {}
        if encode is not None:
            usable = [i for i, ok in enumerate(valid) if ok]
            lat = encode([built[i][0] for i in usable]) if usable else np.zeros((0, z.shape[1]))
            z_np = z.detach().cpu().numpy()
            best: dict[int, float] = {}
            for i, v in zip(usable, lat):
                g = owner[i][0]
                d = float(np.linalg.norm(v - z_np[g]))
                if g not in best or d < best[g] - 1e-4:
                    best[g], pick[g] = d, i
        for i, (g, _) in enumerate(owner):  # no valid candidate verified: the most likely one that built
            if g not in pick and built[i][0] is not None:
                pick[g] = i
        frames = []
        for g in range(len(z)):
            if g not in pick:
                atoms = Atoms(pbc=True)
                atoms.info.update(skeleton="", space_group=0, structure_valid=False, levels_agree=False,
                                  candidates=len(cands[g]), formula_global=self._formula(comps[g, 0].tolist()))
                frames.append(atoms)
                continue
            i = pick[g]
            atoms, label = built[i]
            atoms = atoms.copy()
            _, rank, ids = cands[g][owner[i][1]]
            atoms.info.update(skeleton=label, space_group=int(label.split()[0][2:]), skeleton_rank=owner[i][1],
                              composition_rank=rank, formula_global=self._formula(comps[g, rank].tolist()),
                              candidates=len(cands[g]), levels_agree=True, structure_valid=bool(valid[i]))
            frames.append(atoms)
        if relax == "chgnet":
            frames = _relax_chgnet(frames)
        return frames


def _relax_chgnet(frames: list[Atoms]) -> list[Atoms]:
    """CHGNet relaxation (positions + cell, FIRE, fmax 0.1 eV/Å, ≤ 100 steps) of each crystal;
    ``info['relax_delta']`` = relaxed − unrelaxed energy per atom (eV/atom)."""
    from atomarch.chem.oracles import CHGNetOracle
    from atomarch.metrics.crystals import structure_valid

    oracle = CHGNetOracle(progress=False)
    out = []
    for atoms in frames:
        if not len(atoms):
            out.append(atoms)
            continue
        try:
            relaxed, before, after = oracle.relaxed(atoms)
        except Exception as exc:  # CHGNet/ASE failures on a pathological cell: keep the unrelaxed crystal
            atoms.info["relax_error"] = f"{type(exc).__name__}: {str(exc)[:80]}"
            out.append(atoms)
            continue
        relaxed.info.update(atoms.info)
        relaxed.info.update(relax_delta=after - before, structure_valid=bool(structure_valid(relaxed)))
        out.append(relaxed)
    return out
