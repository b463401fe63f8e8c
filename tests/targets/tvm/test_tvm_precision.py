"""TVM int8 / f16 weight values (``--weight-dtype``, ``--decoder-dtype``): the kernels against an independent
numpy reference of the int8-rows math (per-output-row scale = max|row| / 127, values rounded to int8, the
scale applied after the sum), the onnx int8 artifact, and the decoder-precision check printed at compile."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_model, random_lm
from egru_compile.cli import main

pytest.importorskip("tvm")



def q8_rows(M):
    """Independent per-output-row symmetric int8 quantization of M [n_out, n_in] (math convention):
    (integer values as float32, scale [n_out])."""
    M = np.asarray(M, np.float32)
    scale = np.abs(M).max(axis=1) / np.float32(127.0)
    scale[scale == 0] = 1.0
    return np.clip(np.rint(M / scale[:, None]), -127, 127).astype(np.float32), scale.astype(np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_nll(tokens, emb, layers, dec, dec_b, int8_decoder: bool, int8_layers: bool = True):
    """float64 NLL of tokens[1:] after tokens[:-1] with int8 rows in the layers (unless `int8_layers` is
    False) and the decoder (when asked): gx = b + s_W * (q_W @ x) etc., the EGRU cell written out from its
    definition."""
    ident = lambda M: (M, np.ones(M.shape[0]))  # noqa: E731 - float weights, unit scale
    quant = q8_rows if int8_layers else ident
    qs = [(quant(L["W"]), quant(L["R"])) for L in layers]
    state = [(np.zeros(L["thr"].shape), np.zeros(L["thr"].shape)) for L in layers]
    dq = q8_rows(dec) if int8_decoder else None
    out = []
    for t, nxt in zip(tokens[:-1], tokens[1:]):
        x = emb[t].astype(np.float64)
        new = []
        for L, ((qw, sw), (qr, sr)), (c, y) in zip(layers, qs, state):
            h = L["thr"].shape[0]
            gx = L["b"] + sw * (qw @ x)
            gh = L["br"] + sr * (qr @ y)
            z = sigmoid(gx[:h] + gh[:h])
            r = sigmoid(gx[h:2 * h] + gh[h:2 * h])
            g = np.tanh(gx[2 * h:] + r * gh[2 * h:])
            ct = z * c + (1 - z) * g
            o = ct - L["thr"] > 0
            y = np.where(o, ct, 0.0)
            c = np.where(o, ct - L["thr"], ct)
            new.append((c, y))
            x = y
        state = new
        logits = dec_b + (dq[1] * (dq[0] @ x) if int8_decoder else dec @ x)
        m = logits.max()
        out.append(m + np.log(np.exp(logits - m).sum()) - logits[nxt])
    return np.array(out)


def torch_weights(model):
    """emb [V, E], layers (W [3h, n_in], R [3h, h] in math convention, pruned), decoder [V, H], bias [V]."""
    layers = []
    for r in model.rnns:
        layers.append(dict(W=r.kernel.detach().numpy().T.astype(np.float64),
                           R=r.recurrent_kernel.detach().numpy().T.astype(np.float64),
                           b=r.bias.detach().numpy().astype(np.float64),
                           br=r.recurrent_bias.detach().numpy().astype(np.float64),
                           thr=r.thr.detach().clamp(0, 1).numpy().astype(np.float64)))
    dec = model.decoder.decoder
    return (model.embeddings.weight.detach().numpy(), layers, dec.weight.detach().numpy().astype(np.float64),
            dec.bias.detach().numpy().astype(np.float64))


@pytest.fixture(scope="module")
def int8_artifacts(tmp_path_factory):
    d, model = random_lm(tmp_path_factory, "tvm8", vocab=48, emb=16, hidden=(40, 16), sparsity=0.8, seed=2,
                         thr=(0.05, 0.3), lines=8, words_per_line=12)
    outs = {}
    for target, extra in (("tvm", ["--decoder-dtype", "f32"]), ("onnx", ["--decoder-dtype", "f32"])):
        res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", target, "-o", str(d / target),
                                        "--weight-dtype", "int8", "--calib-data", str(d / "text.txt"), *extra])
        assert res.exit_code == 0, res.output
        outs[target] = res.output
    return d, model, outs


def test_int8_tvm_matches_numpy_reference_and_onnx(int8_artifacts):
    from egru_compile.runtime import open_artifact
    d, model, outs = int8_artifacts
    manifest = json.loads((d / "tvm" / "manifest.json").read_text())
    assert manifest["spec"]["weight_dtype"] == "int8" and manifest["spec"]["decoder_dtype"] == "f32"
    assert "quantize-int8: calibration perplexity" in outs["tvm"] and "int8 weight values" in outs["tvm"]
    tvm, onnx = open_artifact(d / "tvm"), open_artifact(d / "onnx")
    ids = tvm.vocab.encode_file(d / "text.txt")
    nll_t = tvm.score(ids[:-1], ids[1:])
    nll_o = onnx.score(ids[:-1], ids[1:])
    emb, layers, dec, dec_b = torch_weights(model)
    ref = reference_nll(ids, emb, layers, dec, dec_b, int8_decoder=False)
    assert np.abs(nll_t - ref).max() < 2e-5
    assert np.abs(nll_t - nll_o).max() < 2e-5              # same int8 numbers, float32 rounding apart
    from tvm_reference import check_streams_equal_batch1
    check_streams_equal_batch1(tvm, ids)                    # the batched int8 kernels too


@pytest.mark.parametrize("weight_dtype,decoder_dtype,embed_mode", [("f16", "int8", "csc")])
def test_kernel_value_dtypes(weight_dtype, decoder_dtype, embed_mode):
    """The step kernels with f16 layer values (against the math on float16-rounded weights: float16 products
    are exact in float32, so only summation order differs) and int8 decoder rows (against the int8-rows
    reference); one compile (the CLI artifact above covers int8 layers)."""
    from egru_compile.targets.tvm import TVMStepRunner
    model = make_model(vocab=48, emb=16, hidden=(40, 16), sparsity=0.8, seed=3, thr=(0.05, 0.3))
    emb, layers, dec, dec_b = torch_weights(model)
    if weight_dtype == "f16":
        for L in layers:
            L["W"], L["R"] = (L[k].astype(np.float16).astype(np.float64) for k in ("W", "R"))
    if decoder_dtype == "f16":
        dec = dec.astype(np.float32).astype(np.float16).astype(np.float64)
    kl = [dict(W=L["W"].T.astype(np.float32), R=L["R"].T.astype(np.float32), b=L["b"], br=L["br"], thr=L["thr"])
          for L in layers]
    rt = TVMStepRunner(emb, kl, dec_b, dec.astype(np.float32), embed_mode=embed_mode, weight_dtype=weight_dtype,
                       decoder_dtype=decoder_dtype)
    toks = np.random.default_rng(4).integers(0, 48, 40)
    from egru_compile.runner import nll_reference
    nll = nll_reference(rt.run(toks[:-1]), toks[1:])
    ref = reference_nll(toks, emb, layers, dec, dec_b, int8_decoder=decoder_dtype == "int8",
                        int8_layers=weight_dtype == "int8")
    assert np.abs(nll - ref).max() < 2e-5


def test_decoder_precision_check_is_the_reference_perplexity_change(int8_artifacts):
    """--decoder-dtype auto: the calibration perplexity before / after int8 decoder rows (the record printed at
    compile) equals the numpy reference's, and the rows are int8 exactly when the change is <= 0.1 %."""
    from egru_compile.frontend import load_source
    from egru_compile.passes import PassManager, PassOptions, build_pipeline, graph_properties
    from egru_compile.targets.stack import extract_stack
    from egru_compile.runtime import graph_perplexity
    from egru_compile.targets.tvm.precision import DECODER_PPL_LIMIT, decoder_precision
    d, model, _ = int8_artifacts
    src = load_source(d / "m.pt")
    g = src.to_graph()
    g = PassManager(build_pipeline(None, {"int8-weights"}, have=graph_properties(g)),
                    options=PassOptions()).run(g)
    ids = src.vocab.encode_file(d / "text.txt")
    dt, rec = decoder_precision(g, extract_stack(g), "int8", "auto", ids, graph_perplexity)
    emb, layers, dec, dec_b = torch_weights(model)
    for key, q in (("ppl_before", False), ("ppl_after", True)):
        ref = float(np.exp(reference_nll(ids, emb, layers, dec, dec_b, int8_decoder=q).mean()))
        assert abs(rec[key] / ref - 1) < 1e-5, (key, rec[key], ref)
    assert dt == ("int8" if rec["ppl_rel_change"] <= DECODER_PPL_LIMIT else "f32")
    assert f"{100 * rec['ppl_rel_change']:+.3f} %" in rec["note"] and f"decoder rows {dt}" in rec["note"]
