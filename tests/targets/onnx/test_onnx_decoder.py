"""ONNX target, ``decoder_dtype``: int8 decoder rows (one scale per vocabulary row, recounted here in numpy)
against the interpreter on the graph with those dequantized rows; ``auto`` keeps f32 without calibration and
otherwise decides by the calibration perplexity change, recomputed here."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from egru_compile.ir import run_graph
from egru_compile.passes.utils import eval_constant
from egru_compile.runtime.evaluate import graph_perplexity
from egru_compile.targets.onnx import lower_graph, serialize
from egru_compile.targets.onnx.runner import create_session
from test_onnx import hand_built

LIMIT = 1e-3


def _rows_q8(W: np.ndarray) -> np.ndarray:
    """Symmetric int8 per row (scale = max|row| / 127), dequantized: what the int8 decoder computes with."""
    W = np.asarray(W, np.float32)
    scale = (np.abs(W).max(1) / np.float32(127)).astype(np.float32)
    scale[scale == 0] = 1
    q = np.clip(np.rint(W / scale[:, None]), -127, 127)
    return (q * scale[:, None]).astype(np.float32)


def _with_decoder(graph, weight):
    g = graph.clone()
    (dec,) = [n for n in g.nodes if n.op == "linear"]
    w = g.const(weight, name="dec_w_ref", index=g.index_of(dec))
    dec.inputs = [dec.inputs[0], w, *dec.inputs[2:]]
    return g


def _decoder_weight(graph):
    (dec,) = [n for n in graph.nodes if n.op == "linear"]
    return np.asarray(eval_constant(dec.inputs[1], {}))


def _max_diff(low, ref_graph, steps=40, seed=0):
    s = create_session(serialize(low.model))
    names = [o.name for o in s.get_outputs()]
    state = {i.name: np.zeros(i.shape, np.float32) for i in s.get_inputs() if i.name != "tokens"}
    ref_state = [np.zeros(v.type.shape, v.type.np_dtype) for v in ref_graph.inputs[1:]]
    V = ref_graph.outputs[0].type.shape[-1]
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(steps):
        tok = int(rng.integers(0, V))
        ref = run_graph(ref_graph, [np.array([tok], np.int64)] + ref_state)
        outs = dict(zip(names, s.run(None, {"tokens": np.array([tok], np.int64), **state})))
        worst = max(worst, float(np.abs(outs["logits"].astype(np.float64) - ref[0]).max()))
        ref_state = ref[1:1 + len(ref_state)]
        for k in state:
            state[k] = outs[k + "_out"]
    return worst


def test_int8_decoder_rows_match_interpreter_of_dequantized_rows():
    g = hand_built(int8=True)
    low = lower_graph(g, {"decoder_dtype": "int8"})
    onnx.checker.check_model(low.model, full_check=True)
    assert low.stats["decoder_precision"]["dtype"] == "int8"
    dec = [w for w in low.stats["weights"] if w["name"].startswith("decoder_weight")]
    assert len(dec) == 1 and dec[0]["stored"] == "dense" and dec[0]["dtype"] == "i8"    # a plain int8 initializer
    W = _decoder_weight(g)
    ref = _with_decoder(g, _rows_q8(W))
    assert _max_diff(low, ref) <= 1e-5
    assert _max_diff(low, g) > 1e-4                              # and the rows really are int8 (not f32)


def test_auto_without_calibration_keeps_f32_rows():
    g = hand_built(int8=True)
    low = lower_graph(g, {})
    rec = low.stats["decoder_precision"]
    assert rec["dtype"] == "f32" and "--calib-data" in rec["note"]
    assert _max_diff(low, g) <= 1e-5


def test_auto_with_calibration_decides_by_the_perplexity_change():
    g = hand_built(int8=True)
    calib = np.random.default_rng(3).integers(0, 30, 80)
    low = lower_graph(g, {"calib_token_ids": calib, "perplexity": graph_perplexity})
    rec = low.stats["decoder_precision"]
    before = graph_perplexity(g, calib)
    after = graph_perplexity(_with_decoder(g, _rows_q8(_decoder_weight(g))), calib)
    change = (after - before) / before
    assert rec["ppl_before"] == before and abs(rec["ppl_rel_change"] - change) <= 1e-9
    assert rec["dtype"] == ("int8" if change <= LIMIT else "f32")
    assert f"{100 * change:+.3f} %" in rec["note"]
    # f32 layers: auto leaves the decoder f32 and measures nothing
    low = lower_graph(hand_built(), {"calib_token_ids": calib, "perplexity": graph_perplexity})
    assert low.stats["decoder_precision"]["dtype"] == "f32" and "ppl_before" not in low.stats["decoder_precision"]
    assert "calib_token_ids" not in low.model.SerializeToString().decode("latin-1")


def test_decoder_dtype_is_validated_and_not_stored_with_internals():
    from egru_compile.targets.onnx.options import OnnxLoweringError, OnnxOptions
    with pytest.raises(OnnxLoweringError, match="decoder_dtype"):
        OnnxOptions.from_options({"decoder_dtype": "int4"})
    d = OnnxOptions.from_options({"decoder_dtype": "int8", "calib_token_ids": np.arange(3),
                                  "perplexity": graph_perplexity}).to_dict()
    assert d["decoder_dtype"] == "int8" and "perplexity" not in d and "calib_token_ids" not in d
