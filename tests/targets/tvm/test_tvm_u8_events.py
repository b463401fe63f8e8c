"""TVM uint8 event values (``--event-dtype u8``): the VNNI dot products against an int64 recount, every step of
the fused kernel against a numpy reference written from the definitions (EGRU cell, quantize-int8's rows,
uint8 events with one scale per event list: ``s = max / 255``, ``q = min(255, rint(v / s))``), the perplexity
change printed at compile against the same reference, and the refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_model, random_lm
from egru_compile.cli import main

tvm = pytest.importorskip("tvm")
from egru_compile.targets.tvm.spec import has_vnni  # noqa: E402

needs_vnni = pytest.mark.skipif(not has_vnni(), reason="this CPU has no AVX512-VNNI")


def q_events(v):
    """uint8 quantization of one event list, float32 as the rule says: (q as int64, scale)."""
    v = np.asarray(v, np.float32)
    s = np.float32(v.max()) / np.float32(255) if v.size else np.float32(0)
    if not s > 0:                                   # no events, or denormal ones: scale 1
        return np.zeros(v.shape, np.int64), np.float32(1)
    return np.minimum(np.rint(v / s), 255).astype(np.int64), np.float32(s)


def q8_rows(M):
    """Per-output-row symmetric int8 values of M [n_out, n_in] and the scales [n_out]."""
    M = np.asarray(M, np.float32)
    scale = np.abs(M).max(axis=1) / np.float32(127.0)
    scale[scale == 0] = 1.0
    return np.clip(np.rint(M / scale[:, None]), -127, 127).astype(np.int64), scale.astype(np.float64)


@needs_vnni
@pytest.mark.parametrize("n_in,n_out", [(300, 200), (37, 64), (9, 1)])
def test_dot_rows_equal_the_integer_recount(n_in, n_out):
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as TB
    from egru_compile.targets.tvm import u8_events as U
    npad = U.padded(n_out)
    shapes = [("rows", (n_in, npad), "int8"), ("ei", (n_in,), "int32"), ("ev", (n_in,), "float32"),
              ("en", (1,), "int32"), ("qrow", (n_in + 8,), "int32"), ("qword", ((n_in + 8) // 4,), "int32"),
              ("qs", (1,), "float32"), ("isum", (npad,), "int32"), ("acc", (n_out,), "float32")]
    with IRBuilder() as ib:
        with TB.prim_func():
            T.func_name("k")
            T.func_attr({"global_symbol": "k", "tir.noalias": True})
            b = {n: T.arg(n, T.Buffer(s, dt)) for n, s, dt in shapes}
            U.quantize_events(b["ei"], b["ev"], b["en"], b["qrow"], b["qword"], b["qs"])
            U.dot_rows(b["rows"], npad, b["qrow"], b["qword"], b["en"][0], b["isum"])
            U.sums_to_float(n_out, b["isum"], b["qs"], b["acc"])
    from egru_compile.targets.tvm.spec import default_target
    k = tvm.compile(tvm.IRModule({"k": ib.get()}), default_target())["k"]
    rng = np.random.default_rng(n_in)
    W = np.where(rng.random((n_in, n_out)) < 0.2, rng.integers(-127, 128, (n_in, n_out)), 0).astype(np.int8)
    rows = U.dense_event_rows(*_csr(W), n_out)
    for frac in (0.0, 1 / n_in, 0.2, 1.0):
        act = np.flatnonzero(rng.random(n_in) < frac) if frac < 1 else np.arange(n_in)
        vals = (0.001 + rng.random(act.size)).astype(np.float32)
        args = {n: np.zeros(s, dt) for n, s, dt in shapes}
        args["rows"], args["en"][0] = rows, act.size
        args["ei"][:act.size], args["ev"][:act.size] = act, vals
        t = {n: tvm.runtime.tensor(v) for n, v in args.items()}
        k(*[t[n] for n, _, _ in shapes])
        q, s = q_events(vals)
        ref = q @ W[act].astype(np.int64)
        assert t["qs"].numpy()[0] == s
        assert np.array_equal(t["isum"].numpy()[:n_out], ref)
        assert np.array_equal(t["acc"].numpy(), ref.astype(np.float32) * s)
    args["ev"][:] = np.float32(1e-43)                          # denormal events: the scale 0 is taken as 1, q = 0
    args["en"][0] = n_in
    t = {n: tvm.runtime.tensor(v) for n, v in args.items()}
    k(*[t[n] for n, _, _ in shapes])
    assert t["qs"].numpy()[0] == 1 and not t["isum"].numpy().any()


def _csr(W):
    rows, cols = np.nonzero(W)
    ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=W.shape[0]))])
    return ptr, cols, W[rows, cols]


def weights(model):
    """emb, layers (W [3h, n_in], R [3h, h] math convention, float64), decoder [V, H], bias."""
    layers = [dict(W=r.kernel.detach().numpy().T.astype(np.float64),
                   R=r.recurrent_kernel.detach().numpy().T.astype(np.float64),
                   b=r.bias.detach().numpy().astype(np.float64), br=r.recurrent_bias.detach().numpy().astype(np.float64),
                   thr=r.thr.detach().clamp(0, 1).numpy().astype(np.float64)) for r in model.rnns]
    dec = model.decoder.decoder
    return (model.embeddings.weight.detach().numpy().astype(np.float64), layers,
            dec.weight.detach().numpy().astype(np.float64), dec.bias.detach().numpy().astype(np.float64))


def _product(q8, y32, u8=True):
    """(s_row * s_events) * (int8 rows . uint8 events): exact integer sum, then the two scales (u8 False: the
    int8 rows with the float events)."""
    (qm, sm) = q8
    if not u8:
        return sm * (qm @ np.asarray(y32, np.float64))
    qy, sy = q_events(y32)
    return sm * float(sy) * (qm @ qy)


def reference_step(tok, state, emb, qlayers, layers, dec, dec_b, int8_decoder, u8=True):
    """One token from `state` [(c, y float32)]: (logits, new state); event products on uint8 events (or, with
    `u8` False, on the float events)."""
    x, new = None, []
    for l, ((qw, qr), L, (c, y)) in enumerate(zip(qlayers, layers, state)):
        h = L["thr"].shape[0]
        gx = L["b"] + (qw[1] * (qw[0] @ emb[tok]) if l == 0 else _product(qw, x, u8))
        gh = L["br"] + _product(qr, y, u8)
        z = 1 / (1 + np.exp(-(gx[:h] + gh[:h])))
        r = 1 / (1 + np.exp(-(gx[h:2 * h] + gh[h:2 * h])))
        g = np.tanh(gx[2 * h:] + r * gh[2 * h:])
        ct = z * c + (1 - z) * g
        o = ct - L["thr"] > 0
        new.append((np.where(o, ct - L["thr"], ct).astype(np.float32), np.where(o, ct, 0.0).astype(np.float32)))
        x = new[-1][1]
    logits = dec_b + (_product(q8_rows(dec), x, u8) if int8_decoder else dec @ x)
    return logits, new


@needs_vnni
@pytest.mark.parametrize("decoder_dtype,embed_mode", [("int8", "table"), ("f32", "csc")])
def test_every_step_equals_the_uint8_reference(decoder_dtype, embed_mode):
    """Step by step from the kernel's own state (a float32 / float64 rounding difference cannot carry over):
    the logits and the next state of every step against :func:`reference_step`; the events equal."""
    from egru_compile.targets.tvm import TVMStepRunner
    model = make_model(vocab=48, emb=16, hidden=(40, 24, 16), sparsity=0.8, seed=5, thr=(0.05, 0.3))
    emb, layers, dec, dec_b = weights(model)
    qlayers = [(q8_rows(L["W"]), q8_rows(L["R"])) for L in layers]
    rt = TVMStepRunner.from_model(model, weight_dtype="int8", event_dtype="u8", decoder_dtype=decoder_dtype,
                                  embed_mode=embed_mode)
    assert rt.spec.u8_events and rt.spec.u8_decoder == (decoder_dtype == "int8")
    toks = np.random.default_rng(6).integers(0, 48, 60)
    state = rt.get_state()
    active = 0
    for t in toks:
        ref_logits, ref_state = reference_step(int(t), state, emb, qlayers, layers, dec, dec_b,
                                               decoder_dtype == "int8")
        logits = rt.step(int(t))
        state = rt.get_state()
        assert np.abs(logits - ref_logits).max() < 2e-5
        for (c, y), (rc, ry) in zip(state, ref_state):
            assert np.array_equal(y != 0, ry != 0)
            assert np.abs(c - rc).max() < 2e-5 and np.abs(y - ry).max() < 2e-5
            active += int((y != 0).sum())
    assert active > 0


@needs_vnni
def test_compile_prints_the_measured_change_and_batches_equal_batch1(tmp_path_factory):
    """The compile's "uint8 events" line: its 'after' perplexity is the uint8 reference's (recounted here), and
    the artifact's own scoring gives it too; the artifact's streams (one at a time) equal its batch 1."""
    from egru_compile.runtime import open_artifact
    d, model = random_lm(tmp_path_factory, "u8", vocab=48, emb=16, hidden=(40, 16), sparsity=0.8, seed=2,
                         thr=(0.05, 0.3), lines=8, words_per_line=12)
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "tvm", "-o", str(d / "a"), "--event-dtype", "u8",
                                    "--decoder-dtype", "int8", "--calib-data", str(d / "text.txt")])
    assert res.exit_code == 0, res.output
    assert "uint8 event values" in res.output
    assert "uint8 events in the layers' products and the decoder's: calibration perplexity" in res.output
    man = json.loads((d / "a" / "manifest.json").read_text())
    assert man["spec"]["event_dtype"] == "u8" and man["spec"]["weight_dtype"] == "int8"
    rec = man["event_precision"]
    art = open_artifact(d / "a")
    ids = art.vocab.encode_file(d / "text.txt")
    emb, layers, dec, dec_b = weights(model)
    qlayers = [(q8_rows(L["W"]), q8_rows(L["R"])) for L in layers]
    ppl = {}
    for u8 in (True, False):
        nll = []
        state = [(np.zeros(L["thr"].shape, np.float32),) * 2 for L in layers]
        for t, nxt in zip(ids[:-1], ids[1:]):
            logits, state = reference_step(int(t), state, emb, qlayers, layers, dec, dec_b, True, u8)
            m = logits.max()
            nll.append(m + np.log(np.exp(logits - m).sum()) - logits[nxt])
        ppl[u8] = float(np.exp(np.mean(nll)))
    ppl_u8 = ppl[True]
    assert rec["tokens"] == len(ids) and abs(rec["ppl_after"] - ppl_u8) < 1e-4 * ppl_u8
    assert abs(rec["ppl_before"] - ppl[False]) < 1e-4 * ppl[False]
    assert f"{rec['ppl_before']:.3f} (the same int8 kernels with float events) -> {rec['ppl_after']:.3f}" in res.output
    nll_art = art.score(ids[:-1], ids[1:])
    assert abs(float(np.exp(np.mean(nll_art))) - ppl_u8) < 1e-4 * ppl_u8
    from tvm_reference import check_streams_equal_batch1
    check_streams_equal_batch1(art, ids)


def test_uint8_events_need_int8_weights(tmp_path_factory):
    from egru_compile.targets.tvm.spec import EGRUKernelSpec
    with pytest.raises(ValueError, match="needs int8 weights"):
        EGRUKernelSpec(10, 4, (8,), event_dtype="u8")
    d, _ = random_lm(tmp_path_factory, "u8bad", vocab=20, emb=8, hidden=(8,), sparsity=0.5, seed=1,
                     thr=(0.05, 0.3), lines=2, words_per_line=5)
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "tvm", "-o", str(d / "a"), "--event-dtype", "u8",
                                    "--weight-dtype", "f32"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1].startswith("error: --event-dtype u8 needs int8 weights")
    assert not (d / "a").exists()


@needs_vnni
def test_threads_refused_and_streams_said_to_run_one_at_a_time(tmp_path_factory, monkeypatch):
    """No batched kernels for uint8 events: `eval --threads 2` is refused (it would do nothing), `--batch-size`
    says the streams run one at a time; an artifact opened on a CPU without AVX512-VNNI is refused."""
    d, _ = random_lm(tmp_path_factory, "u8thr", vocab=30, emb=8, hidden=(12, 8), sparsity=0.5, seed=4,
                     thr=(0.05, 0.3), lines=4, words_per_line=10)
    assert CliRunner().invoke(main, [str(d / "m.pt"), "--target", "tvm", "-o", str(d / "a"),
                                     "--event-dtype", "u8"]).exit_code == 0
    res = CliRunner().invoke(main, ["eval", str(d / "a"), "--data", str(d / "text.txt"), "--batch-size", "2",
                                    "--threads", "2"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == (
        "error: --threads 2: this artifact's streams run one at a time on one thread (uint8 events have no "
        "batched kernels); only the shared-read batched kernels split streams over threads")
    res = CliRunner().invoke(main, ["eval", str(d / "a"), "--data", str(d / "text.txt"), "--batch-size", "2"])
    assert res.exit_code == 0 and "(2 streams, run one at a time;" in res.output
    import egru_compile.targets.tvm.runner as R
    monkeypatch.setattr(tvm.target.codegen, "target_has_features", lambda *a, **k: False)
    from egru_compile.runtime import open_artifact
    with pytest.raises(R.ArtifactError, match="has no AVX512-VNNI: compile it again without --event-dtype u8"):
        open_artifact(d / "a")
