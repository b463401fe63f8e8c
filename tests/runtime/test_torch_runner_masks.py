"""A pruned checkpoint runs with its masks folded into plain weights: the same logits, bit for bit, as the
model with its ``torch.nn.utils.prune`` hooks (PyTorch's own forward, the reference), and the checkpoint's own
model keeps its masks."""
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import prune

import egru_compile as ec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ptb-egru-small" / "model.pt"


def _hooks(model):
    return [h for m in model.modules() for h in m._forward_pre_hooks.values()
            if isinstance(h, prune.BasePruningMethod)]


def test_pruned_checkpoint_runs_with_folded_masks_and_same_logits():
    art = ec.load(EXAMPLE)
    from egru_compile.frontend import load_source
    hooked = load_source(str(EXAMPLE)).model                  # a fresh copy, hooks and all
    assert _hooks(hooked) and not _hooks(art.runner.model)
    tokens = [5, 17, 2, 999, 40, 40, 7, 3000, 12, 1]
    art.reset()
    state = hooked.init_state(1)
    with torch.no_grad():
        for tok in tokens:
            ref, state = hooked.step(torch.tensor([tok]), state)
            ours = art.step(tok)
            assert np.array_equal(ours, ref.reshape(-1).numpy()), tok
    for name, p in art.runner.model.named_parameters():       # masked entries are exact zeros
        assert not name.endswith("_orig"), name
    k = dict(art.runner.model.named_parameters())["rnns.0.kernel"]
    assert float((k == 0).float().mean()) > 0.5
