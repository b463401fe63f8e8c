"""Chip targets' ``--weight-dtype {int8,f16,f32}``: the chip's eval perplexity equals an independent numpy
recount of the model with its weights quantized that way (per-row int8 as quantize-int8 defines it, or
float16 rounding), within the perplexity change the compile prints; the dtype and its synaptic memory in
mapping.json / manifest.json; f16 refused on a profile with 8-bit weights; ``--float-weights`` = f32."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_model, save_lm
from egru_compile.cli import main
from egru_compile.api import evaluate_path



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("wdtype")
    model = make_model(vocab=60, emb=16, hidden=(48, 16), sparsity=0.8, seed=5, thr=(0.05, 0.3))
    with torch.no_grad():                         # a peaked next-token distribution: quantization shows in PPL
        model.embeddings.weight.mul_(30)
        for layer in model.rnns:
            layer.kernel_orig.mul_(3)
            layer.recurrent_kernel_orig.mul_(3)
    model(torch.zeros(1, 1, dtype=torch.long))    # the prune hooks refresh kernel = kernel_orig * mask
    save_lm(d, model, "calib.txt", lines=10, words_per_line=15)
    from egru_compile.targets.chip.profile import PROFILE_DIR
    text = (PROFILE_DIR / "loihi-like.toml").read_text()
    assert re.search(r"^weight_bits = 8 ", text, re.M)
    (d / "w16.toml").write_text(re.sub(r"^weight_bits = 8 ", "weight_bits = 16 ", text, flags=re.M)
                                .replace('name = "loihi-like"', 'name = "loihi-w16"'))
    return d, model


def _compile(d, name, *extra):
    """loihi-like, or the chip a --profile among `extra` names."""
    out = d / name
    target = [] if "--profile" in extra else ["--target", "loihi-like"]
    res = CliRunner().invoke(main, [str(d / "m.pt"), *target, "-o", str(out), "--force",
                                    "--calib-data", str(d / "calib.txt"), *extra])
    return out, res


def _quantized(w: np.ndarray, dtype: str) -> np.ndarray:
    """w [in, 3h] (EvNN layout; an output row of the compiler's matrix is a column here), as the chip holds it."""
    w = w.astype(np.float32)
    if dtype == "f16":
        return w.astype(np.float16).astype(np.float32)
    if dtype == "int8":
        scale = (np.abs(w).max(0) / np.float32(127)).astype(np.float32)
        scale[scale == 0] = 1
        return np.clip(np.rint(w / scale), -127, 127).astype(np.float32) * scale
    return w


def _numpy_ppl(model, ids, dtype: str) -> float:
    """Perplexity of next-token prediction over `ids` from a zero state, the EGRU equations in numpy."""
    layers = []
    for layer in model.rnns:
        layers.append((_quantized(layer.kernel.detach().numpy(), dtype),
                       _quantized(layer.recurrent_kernel.detach().numpy(), dtype),
                       layer.bias.detach().numpy(), layer.recurrent_bias.detach().numpy(),
                       np.clip(layer.thr.detach().numpy(), 0, 1), layer.hidden_size))
    E = model.embeddings.weight.detach().numpy()
    b_dec = model.decoder.decoder.bias.detach().numpy()
    state = [(np.zeros(h, np.float32), np.zeros(h, np.float32)) for *_, h in layers]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    nll = 0.0
    for t in range(len(ids) - 1):
        x = E[ids[t]]
        for i, (W, R, b, br, thr, h) in enumerate(layers):
            c, y = state[i]
            gx, gh = x @ W + b, y @ R + br
            z, r = sig(gx[:h] + gh[:h]), sig(gx[h:2 * h] + gh[h:2 * h])
            g = np.tanh(gx[2 * h:] + r * gh[2 * h:])
            ct = z * c + (1 - z) * g
            o = (ct - thr > 0).astype(np.float32)
            x = o * ct
            state[i] = (ct - o * thr, x)
        logits = (E @ x + b_dec).astype(np.float64)
        m = logits.max()
        nll += m + np.log(np.exp(logits - m).sum()) - logits[ids[t + 1]]
    return float(np.exp(nll / (len(ids) - 1)))


def _printed_change(output: str, dtype: str) -> tuple[float, float, float]:
    """(ppl before, ppl after, relative change) as the compile printed them."""
    if dtype == "int8":
        m = re.search(r"quantize-int8: calibration perplexity ([\d.]+) -> ([\d.]+) \(([-+\d.]+) %\)", output)
    else:
        m = re.search(r"calibration PPL ([\d.]+) \(float\) -> ([\d.]+) \(f16\), change ([-+\d.]+) %", output)
    assert m, output
    return float(m.group(1)), float(m.group(2)), float(m.group(3)) / 100


@pytest.mark.parametrize("dtype", ["int8", "f16"])
def test_chip_eval_matches_numpy_recount_of_the_quantized_model(setup, dtype):
    d, model = setup
    extra = ["--profile", str(d / "w16.toml")] if dtype == "f16" else []
    out, res = _compile(d, dtype, "--weight-dtype", dtype, *extra)
    assert res.exit_code == 0, res.output
    before, after, change = _printed_change(res.output, dtype)
    r = evaluate_path(out, d / "calib.txt", quiet=True)
    ids = np.asarray(model_ids(out, d))
    ref = _numpy_ppl(model, ids, dtype)
    ref_f32 = _numpy_ppl(model, ids, "f32")
    assert r["perplexity"] == pytest.approx(ref, rel=1e-4)           # the chip runs exactly this model
    assert after == pytest.approx(ref, abs=2e-3) and before == pytest.approx(ref_f32, abs=2e-3)
    assert abs(r["perplexity"] / ref_f32 - 1) <= abs(change) + 1e-4   # within the printed change
    mapping = json.loads((out / "mapping.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    w = mapping["weights"]
    bits = {"int8": 8, "f16": 16}[dtype]
    assert w["dtype"] == dtype == manifest["weight_dtype"] and w["bits"] == bits
    # the placement's per-core memory (synapses x (weight + index bits) + axon pointers) is the dtype's here
    assert w["synaptic_memory_bytes"] == sum(c["memory_bytes"] for c in mapping["cores"])
    assert manifest["rnn_synaptic_memory_bytes"] == w["synaptic_memory_bytes"]
    assert manifest["synaptic_memory_bytes"] == mapping["totals"]["memory_bytes"]   # decoder on the host: same
    z = np.load(out / "program.npz")
    assert z["l0_R_data"].dtype == {"int8": np.int8, "f16": np.float16}[dtype]
    assert ("weights float16" if dtype == "f16" else "weights int8") in (out / "report.txt").read_text()


def model_ids(out, d):
    """The evaluation tokens as `eval` encodes them (the artifact's vocabulary, <eos> per line)."""
    from egru_compile.runner import read_vocab_file
    return read_vocab_file(out / "vocab.txt").encode_file(d / "calib.txt")


def test_f16_refused_where_the_profile_holds_8_bit_weights(setup):
    d, _ = setup
    _, res = _compile(d, "f16_8bit", "--weight-dtype", "f16")
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and "16-bit" in line and "weight_bits = 8" in line


def test_float_weights_is_f32(setup):
    d, _ = setup
    out, res = _compile(d, "fw", "--float-weights")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["weight_dtype"] == "f32"
    assert np.load(out / "program.npz")["l0_R_data"].dtype == np.float32
    _, res = _compile(d, "fw_int8", "--float-weights", "--weight-dtype", "int8")
    assert res.exit_code == 1 and "contradicts" in res.output
