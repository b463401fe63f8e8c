"""The onnx target takes the embedding-fold options it shares with the tvm target (``--fold-embedding``,
``--fold-max-mb``): the decision reaches the lowering, and folded or not the model computes PyTorch's logits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import random_lm
from egru_compile.cli import main

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("flags,folded", [((), True), (("--fold-embedding", "off"), False),
                                          (("--fold-max-mb", "0"), False),
                                          (("--fold-max-mb", "0", "--fold-embedding", "on"), True)])
def test_fold_options_reach_the_onnx_lowering(tmp_path_factory, flags, folded):
    from egru_compile.runtime import open_artifact
    d, model = random_lm(tmp_path_factory, "onnxfold", vocab=30, emb=8, hidden=(12, 8), sparsity=0.7, seed=1,
                         thr=(0.05, 0.3), text=None)
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "onnx", "-o", str(d / "out"), *flags])
    assert res.exit_code == 0, res.output
    m = json.loads((d / "out" / "manifest.json").read_text())
    assert m["lowering"]["folded_embedding"] is folded
    r = open_artifact(d / "out")
    state = model.init_state(1)
    with torch.no_grad():
        for tok in [3, 17, 29, 0, 12, 9, 9]:
            logits, state = model.step(torch.tensor([tok]), state)
            assert np.abs(r.step(tok) - logits.numpy()[0]).max() < 1e-5
