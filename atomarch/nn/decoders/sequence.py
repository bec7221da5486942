"""The skeleton level shared by the sequence decoders: a GRU that writes a structure's discrete
skeleton (a SELFIES string for molecules, space group + Wyckoff orbits for crystals) as tokens,
conditioned on the latent and on the global level's element counts."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from atomarch.config import DecoderConfig
from atomarch.nn.readout import mlp


class Grammar(Protocol):
    """Constrains a beam search: which tokens each live row may write next.

    ``allowed(step)`` → [rows, V] bool; ``advance(parent, tok)``: the rows were re-drawn from
    ``parent`` [rows] and wrote ``tok`` [rows] (the grammar updates its per-row state)."""

    def allowed(self, step: int) -> torch.Tensor: ...

    def advance(self, parent: torch.Tensor, tok: torch.Tensor) -> None: ...


class SkeletonLevel(nn.Module):
    """Token-level GRU: (z [G, d], counts [G, T], previous tokens [G, L]) → logits [G, L, V].

    The condition (``z`` and log(1 + counts)) sets the initial hidden state of every layer and
    is fed again at each step.
    """

    def __init__(self, vocab_size: int, latent_dim: int, n_types: int, cfg: DecoderConfig) -> None:
        super().__init__()
        self.layers, self.hidden = cfg.gru_layers, cfg.gru_hidden
        self.token_dropout = float(cfg.token_dropout)
        self.count_dropout = float(cfg.count_dropout)
        self.cond = mlp([latent_dim + n_types, cfg.gru_hidden, cfg.gru_hidden])
        self.h0 = nn.Linear(cfg.gru_hidden, cfg.gru_layers * cfg.gru_hidden)
        self.embed = nn.Embedding(vocab_size, cfg.token_dim)
        self.gru = nn.GRU(cfg.token_dim + cfg.gru_hidden, cfg.gru_hidden, cfg.gru_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.gru_layers > 1 else 0.0)
        self.out = nn.Linear(cfg.gru_hidden, vocab_size)

    def condition(self, z: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(step condition [G, H], initial hidden state [layers, G, H]). ``count_dropout``: the
        counts of that share of rows are zeroed while training (of every row when it is 1)."""
        counts = counts.float()
        if self.count_dropout >= 1.0:
            counts = torch.zeros_like(counts)
        elif self.training and self.count_dropout > 0:
            counts = counts * (torch.rand(len(counts), 1, device=counts.device) >= self.count_dropout)
        c = self.cond(torch.cat([z, torch.log1p(counts)], dim=-1))
        h0 = torch.tanh(self.h0(c)).view(-1, self.layers, self.hidden).transpose(0, 1).contiguous()
        return c, h0

    def forward(self, z: torch.Tensor, counts: torch.Tensor, tokens_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [G, L, V] of the next token after each of ``tokens_in``
        [G, L] (``<bos>`` first). While training, ``token_dropout`` of the inputs after the
        first are replaced by ``<pad>`` (id 0)."""
        if self.training and self.token_dropout > 0 and tokens_in.shape[1] > 1:
            drop = torch.rand(tokens_in.shape, device=tokens_in.device) < self.token_dropout
            drop[:, 0] = False
            tokens_in = tokens_in.masked_fill(drop, 0)
        c, h = self.condition(z, counts)
        x = torch.cat([self.embed(tokens_in), c.unsqueeze(1).expand(-1, tokens_in.shape[1], -1)], dim=-1)
        y, _ = self.gru(x, h)
        return self.out(y)

    @torch.no_grad()
    def greedy(self, z: torch.Tensor, counts: torch.Tensor, bos: int, eos: int, max_length: int) -> torch.Tensor:
        """Greedy decoding: token ids [G, ≤ max_length] (``eos`` marks the end of each row)."""
        c, h = self.condition(z, counts)
        tok = torch.full((len(z),), bos, dtype=torch.long, device=z.device)
        done = torch.zeros(len(z), dtype=torch.bool, device=z.device)
        out = []
        for _ in range(max_length):
            x = torch.cat([self.embed(tok), c], dim=-1).unsqueeze(1)
            y, h = self.gru(x, h)
            tok = self.out(y[:, 0]).argmax(-1)
            tok = torch.where(done, torch.full_like(tok, eos), tok)
            out.append(tok)
            done = done | (tok == eos)
            if bool(done.all()):
                break
        return torch.stack(out, dim=1)


    @torch.no_grad()
    def beam(self, z: torch.Tensor, counts: torch.Tensor, bos: int, eos: int, max_length: int,
             beams: int, grammar: Grammar | None = None, return_scores: bool = False):
        """Beam search: for each of the G latents, the ``beams`` most likely token sequences
        (best first, each ending before ``eos``), by summed log-probability. A ``grammar``
        (one row per (latent, beam), latent-major) masks the tokens each row may write next;
        rows left with no allowed token die. With ``return_scores``, also each sequence's summed
        log-probability (same nesting)."""
        G, B = len(z), beams
        c, h = self.condition(z, counts)
        c = c.repeat_interleave(B, 0)
        h = h.repeat_interleave(B, 1)
        score = torch.full((G, B), float("-inf"), device=z.device)
        score[:, 0] = 0.0  # one live beam at the start
        tok = torch.full((G * B,), bos, dtype=torch.long, device=z.device)
        seqs = torch.zeros(G * B, 0, dtype=torch.long, device=z.device)
        done = torch.zeros(G * B, dtype=torch.bool, device=z.device)
        offset = (torch.arange(G, device=z.device) * B).unsqueeze(1)
        for step in range(max_length):
            y, h = self.gru(torch.cat([self.embed(tok), c], dim=-1).unsqueeze(1), h)
            logp = torch.log_softmax(self.out(y[:, 0]), dim=-1)
            V = logp.shape[-1]
            if grammar is not None:
                logp = logp.masked_fill(~grammar.allowed(step), float("-inf"))
            frozen = torch.full_like(logp, float("-inf"))
            frozen[:, eos] = 0.0
            logp = torch.where(done.unsqueeze(1), frozen, logp)
            total = (score.view(-1, 1) + logp).view(G, B * V)
            score, idx = total.topk(B, dim=1)
            parent = (offset + idx // V).view(-1)
            tok = (idx % V).view(-1)
            h = h[:, parent]
            if grammar is not None:
                grammar.advance(parent, tok)
            seqs = torch.cat([seqs[parent], tok.unsqueeze(1)], dim=1)
            done = done[parent] | (tok == eos)
            if bool(done.all()):
                break
        out, scores = [], []
        for g in range(G):
            rows, sc = [], []
            for b in range(B):
                if torch.isfinite(score[g, b]) and (grammar is None or bool(done[g * B + b])):
                    row = seqs[g * B + b].tolist()
                    rows.append(row[: row.index(eos)] if eos in row else row)
                    sc.append(float(score[g, b]))
            out.append(rows)
            scores.append(sc)
        return (out, scores) if return_scores else out
