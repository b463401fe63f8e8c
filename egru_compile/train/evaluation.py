"""Evaluation during and after training: loss / perplexity (+ activity and dynamic MACs for EGRU) of a token
stream, split across DDP ranks and summed; the test split at the AWD convention; the DDP helpers."""
from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data import Vocabulary
from ..model import EGRULanguageModel
from .baselines import dense_forward
from .data import iter_bptt
from .forward import detach_state
from .metrics import measure_activity_and_macs


def _dist_setup() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: list[float], local: bool = False) -> list[float]:
    if local or not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def evaluate(model, tokens: torch.Tensor, batch_size: int, bptt: int = 200, local: bool = False) -> dict:
    """Loss/ppl (+ activity and dynamic MACs for EGRU) over `tokens`, split across DDP ranks and summed
    (`local`: this process evaluates all of `tokens` alone)."""
    distributed = dist.is_initialized() and not local
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    n = tokens.numel() // world
    chunk = tokens[rank * n:(rank + 1) * n]
    L = len(model.config.hidden_sizes)
    if isinstance(model, EGRULanguageModel):
        m = measure_activity_and_macs(model, chunk, batch_size=batch_size, bptt=bptt)
        ntok = m["tokens"]
        sums = _all_sum([m["loss"] * ntok, ntok, m["dynamic_macs_per_token"] * ntok]
                        + [a * ntok for a in m["activity"]], local)
        loss, ntok = sums[0] / sums[1], sums[1]
        return {"loss": loss, "ppl": math.exp(loss), "tokens": int(ntok), "dynamic_macs_per_token": sums[2] / ntok,
                "activity": [a / ntok for a in sums[3:]], "static_dense_macs": m["static_dense_macs"],
                "nonzero_weights": m["nonzero_weights"]}
    was = model.training
    model.eval()
    from .data import batchify
    src = batchify(chunk, batch_size)
    state = model.init_state(batch_size)
    nll, ntok = 0.0, 0
    with torch.no_grad():
        for inp, tgt in iter_bptt(src, bptt):
            out = dense_forward(model, inp, state)
            nll += float(F.cross_entropy(out.logits.view(-1, out.logits.size(-1)), tgt.reshape(-1), reduction="sum"))
            ntok += tgt.numel()
            state = detach_state(out.state)
    model.train(was)
    nll, ntok = _all_sum([nll, ntok], local)
    return {"loss": nll / ntok, "ppl": math.exp(nll / ntok), "tokens": int(ntok),
            "dynamic_macs_per_token": float(model.static_macs()), "activity": [1.0] * L,
            "static_dense_macs": model.static_macs(), "nonzero_weights": None}


def evaluate_test(model, data_dir: str, vocab: Vocabulary, batch_size: int = 1) -> dict:
    """Test-split perplexity on this process only (no DDP), AWD convention: batch 1, carried state."""
    from .data import find_split
    tokens = torch.from_numpy(vocab.encode_file(find_split(data_dir, "test")))
    return evaluate(model, tokens, batch_size, local=True)
