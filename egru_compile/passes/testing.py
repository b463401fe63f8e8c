"""Small helpers for testing passes (and targets) against the reference interpreter.

* `make_pruned_model` — an `EGRULanguageModel` with uniformly random ``torch.nn.utils.prune`` masks.
* `SeparateGateEGRU` — the same EGRU math written with one matrix per gate (three ``@`` per input), to show
  that fuse-gates / fuse-cell work on any layout the frontend can trace.
* `run_steps` / `max_abs_diff` — stream tokens through graphs from a given state and compare.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from ..ir import Graph
from ..ir import Stepper


def make_pruned_model(vocab_size: int, embedding_size: int, hidden_sizes: list[int], density: float = 0.5,
                      seed: int = 0, prune_recurrent: bool = True):
    """EGRU LM with uniformly random masks of the given density on every kernel (and recurrent kernel).
    Returns (model, masks) with masks {"rnns.<l>.kernel": np.ndarray, ...} (1 = kept)."""
    from ..model import EGRUConfig, EGRULanguageModel
    torch.manual_seed(seed)
    model = EGRULanguageModel(EGRUConfig(vocab_size=vocab_size, embedding_size=embedding_size,
                                         hidden_sizes=list(hidden_sizes)))
    rng = np.random.default_rng(seed)
    masks = {}
    for i, layer in enumerate(model.rnns):
        for name in ("kernel", "recurrent_kernel") if prune_recurrent else ("kernel",):
            w = getattr(layer, name)
            mask = (rng.random(tuple(w.shape)) < density).astype(np.float32)
            if density < 1.0:
                prune.custom_from_mask(layer, name, torch.from_numpy(mask))
            masks[f"rnns.{i}.{name}"] = mask
    model.eval()
    return model, masks


class SeparateGateEGRU(nn.Module):
    """EGRU LM written with separate per-gate weights (z, r, g), some operands commuted relative to
    `EGRULayer` (same math), an unclamped threshold, and an untied ``nn.Linear`` decoder (or, with
    ``tied_decoder``, ``y @ embedding.weight.t() + bias``)."""

    def __init__(self, vocab_size: int, embedding_size: int, hidden_sizes: list[int], seed: int = 0,
                 tied_decoder: bool = False):
        super().__init__()
        self.tied_decoder = tied_decoder
        g = torch.Generator().manual_seed(seed)
        self.config = SimpleNamespace(hidden_sizes=list(hidden_sizes), vocab_size=vocab_size,
                                      embedding_size=embedding_size)
        self.emb = nn.Embedding(vocab_size, embedding_size)
        with torch.no_grad():
            self.emb.weight.uniform_(-1.0, 1.0, generator=g)
        self.cells = nn.ModuleList()
        ins = [embedding_size] + list(hidden_sizes[:-1])
        for i, h in zip(ins, hidden_sizes):
            cell = nn.Module()
            for gate in "zrg":
                cell.register_parameter(f"w_{gate}", nn.Parameter(torch.randn(i, h, generator=g) / i ** 0.5))
                cell.register_parameter(f"u_{gate}", nn.Parameter(torch.randn(h, h, generator=g) / h ** 0.5))
                cell.register_parameter(f"b_{gate}", nn.Parameter(0.1 * torch.randn(h, generator=g)))
                cell.register_parameter(f"c_{gate}", nn.Parameter(0.1 * torch.randn(h, generator=g)))
            cell.thr = nn.Parameter(0.05 * torch.rand(h, generator=g))
            self.cells.append(cell)
        self.out = nn.Linear(hidden_sizes[-1], vocab_size)   # tied: only its bias is used

    def prune_random(self, density: float, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        masks = {}
        for i, cell in enumerate(self.cells):
            for gate in "zrg":
                for kind in "wu":
                    name = f"{kind}_{gate}"
                    w = getattr(cell, name)
                    mask = (rng.random(tuple(w.shape)) < density).astype(np.float32)
                    prune.custom_from_mask(cell, name, torch.from_numpy(mask))
                    masks[f"cells.{i}.{name}"] = mask
        return masks

    def step(self, tokens, state):
        x = self.emb(tokens)
        new_state = []
        for cell, (c, y) in zip(self.cells, state):
            gx_z = x @ cell.w_z + cell.b_z
            gx_r = x @ cell.w_r + cell.b_r
            gx_g = x @ cell.w_g + cell.b_g
            gh_z = y @ cell.u_z + cell.c_z
            gh_r = y @ cell.u_r + cell.c_r
            gh_g = y @ cell.u_g + cell.c_g
            z = torch.sigmoid(gh_z + gx_z)
            r = torch.sigmoid(gx_r + gh_r)
            g = torch.tanh(gx_g + gh_g * r)
            c_tilde = c * z + g * (1.0 - z)
            o = (c_tilde - cell.thr > 0).float()
            y = c_tilde * o
            c = c_tilde - cell.thr * o
            new_state.append((c, y))
            x = y
        if self.tied_decoder:      # decoder written as y @ table.T: the table must stay one constant
            return x @ self.emb.weight.t() + self.out.bias, new_state
        return self.out(x), new_state


def random_state(graph: Graph, rng: np.random.Generator, event_density: float = 0.5) -> dict[int, np.ndarray]:
    """Random recurrent state for `graph` keyed by input index: c ~ U(-1, 1), y sparse (events)."""
    out = {}
    for i, v in enumerate(graph.inputs):
        if v.meta.get("role") != "state_in":
            continue
        a = rng.uniform(-1.0, 1.0, v.type.shape).astype(np.float32)
        if v.meta.get("kind") == "y":
            a = np.where(rng.random(v.type.shape) < event_density, np.abs(a) + 0.1, 0.0).astype(np.float32)
        out[i] = a
    return out


def run_steps(graph: Graph, tokens, state: dict[int, np.ndarray] | None = None) -> list[list[np.ndarray]]:
    """All graph outputs after each token, starting from `state` (zero state when None)."""
    st = Stepper(graph)
    st.reset(state)
    return [[np.array(o) for o in st.step(int(t))] for t in tokens]


def _by_role(graph: Graph, outs: list[np.ndarray]) -> dict:
    keyed = {}
    for v, a in zip(graph.outputs, outs):
        key = "logits" if v.meta.get("role") == "logits" else (v.meta.get("layer"), v.meta.get("kind"))
        keyed[key] = a
    return keyed


def max_abs_diff(g1: Graph, g2: Graph, steps: int = 30, seed: int = 0) -> float:
    """Largest output difference of two step graphs over `steps` random tokens from a random state."""
    rng = np.random.default_rng(seed)
    vocab = Stepper(g1).logits_out.type.shape[-1]
    tokens = rng.integers(0, vocab, steps)
    state = random_state(g1, rng)
    names1 = [(v.meta.get("layer"), v.meta.get("kind")) for v in g1.inputs]
    state2 = {}
    for i, v in enumerate(g2.inputs):
        key = (v.meta.get("layer"), v.meta.get("kind"))
        if v.meta.get("role") == "state_in":
            state2[i] = state[names1.index(key)]
    a = run_steps(g1, tokens, state)
    b = run_steps(g2, tokens, state2)
    worst = 0.0
    for oa, ob in zip(a, b):
        ka, kb = _by_role(g1, oa), _by_role(g2, ob)
        assert ka.keys() == kb.keys()
        for k in ka:
            worst = max(worst, float(np.max(np.abs(np.asarray(ka[k], np.float64) - np.asarray(kb[k], np.float64)))))
    return worst
