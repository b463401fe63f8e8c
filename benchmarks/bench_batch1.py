"""Batch-1 per-token latency, side by side: PyTorch dense, ORT dense, ONNX-compiled (stock ORT), TVM-compiled.

PTB-size EGRU (embedding 750, hidden 1350/1350/750, vocabulary 10000, tied decoder), random weights, the RNN
matrices magnitude-pruned to each weight sparsity, per-layer thresholds bisected so that every layer fires at
about the target activity. Everything runs on one thread (torch.set_num_threads(1), ORT intra-op 1,
TVM_NUM_THREADS=1) in one process; the variants are timed interleaved (each round runs every variant on the
same token stream: reset, 10 untimed burn-in tokens, then per-token timing), rotating the order each round.
Reported: the median over all timed tokens of all rounds (other processes inflate single tokens; the
median is robust to them). The clock is this thread's CPU time (``--clock thread``, default: on a machine
shared with other jobs, a 30 ms dense token is preempted far more often than a 0.3 ms sparse one, which
wall time would count against it); ``--clock wall`` for wall time.

Variants (all from the same weights and thresholds):

* ``torch``     — `EGRULanguageModel.step` (dense matmuls on the zero-filled pruned weights);
* ``ort-dense`` — the traced step lowered as a plain MatMul graph (no event gating, no folding, dense
  initializers), `compile_onnx` + `open_artifact`, stock onnxruntime;
* ``ort-dense-int8`` — the ort-dense graph quantized with ONNX Runtime's own ``quantize_dynamic`` (int8 weights,
  MatMulInteger; what a user would pick instead of us), same weights, stock onnxruntime;
* ``onnx``      — default pass pipeline + `compile_onnx` (event-gated sparse program), `open_artifact`;
* ``onnx-int8`` — the same plus ``quantize-int8``, compiled with ``weight_dtype="int8"`` (`--onnx-weight-dtype
  int8`: int8 weight rows, per-row scale after the sum, one integer product per event tensor; with
  ``--calib-tokens N`` (default 100 tokens of the timed stream, like ``--calib-data``) the decoder rows are int8
  too when the calibration perplexity changes by <= 0.1 %, else f32; the table says which). Its weights are the int8
  ones, not the f32 ones the other variants hold; `bench_onnx.py` times the dense graph of those very
  weights too (same speed as ORT dense: a dense MatMul's time does not depend on the values);
* ``tvm``       — default pass pipeline + `compile_tvm` (`egru_step.so`), `open_artifact`; the timed call is
  the artifact's packed ``egru_step`` (one Python -> TVM call per token, logits written in place);
* ``tvm-int8`` — the same with ``weight_dtype="int8"`` (int8 CSR rows, float events; the decoder rows as the
  calibration check decides, like ``onnx-int8``);
* ``tvm-int8-u8`` — the same with ``event_dtype="u8"`` too (uint8 events, exact VNNI dot products over dense
  int8 rows: W8A8 like the ``quantize_dynamic`` peer — activations quantized as it does, weights per output row;
  only on a CPU with AVX512-VNNI).

After the batch-1 runs, the same process prints the issue-26 goal lines of batched streams
(`bench_batch.batch16_goals`: ``eval --batch-size 16`` of the tvm artifact at 1 and 2 threads and of the dense
ORT graph on the first ``--batch-tokens`` PTB test tokens; 0 leaves them out).

Two scopes:

* ``rnn``   — RNN stack only (token -> embedding / embedding-table row -> 3 EGRU layers, no decoder). torch:
  embedding lookup + the 3 layers; ORT: the same IR graphs with the decoder stripped
  (`bench_onnx.strip_decoder`), compiled the same way; TVM: the artifact's kernels compiled once more with
  the decoder emitter replaced by an empty one (same generator, same spec, same packed weight / state
  tensors of the loaded artifact), i.e. exactly the layer loop of the whole-token program.
* ``token`` — the whole token including the decoder (logits [V]).

Activity is real: it is measured on the timed stream from the compiled TVM program's own event lists (and
from the ONNX program's ``events{l}`` outputs), printed per layer. MAC ratio = dense MACs / dynamic MACs
(count-macs convention: RNN input + recurrent matrices, the embedding input counts fully active; for the
``token`` scope the decoder's V x H_last dense vs (active units of the last layer) x V is added).

    nice .venv/bin/python -m benchmarks.bench_batch1        # full grid 4 sparsities x 3 activities
                                                            # (~8 min idle; 36 min at load average 8)

Writes benchmarks/results/batch1.{md,json,png} (``--out PREFIX`` to change). At the 85 % / 20 % point (unless
``--no-profile``) it also times the layer loop layer by layer (TVM programs compiled for the first 1, 2, 3
layers without decoder) and the gate-update kernel alone, and prints the distance to the memory roofline
(issue 17 item 4): per target and part, the bytes of weights and indices touched per token
(`egru_compile.runtime.traffic`) and the achieved GB/s next to this core's L2 / L3 / DRAM stream and random-gather
read rates, measured in the same run (`bandwidth.py`); and the goal lines of issue 17 items 1 and 2 (whole
token vs the best dense peer: TVM f32 >= 15x, TVM int8 >= 30x (issue 26) when the tvm target takes ``weight_dtype``,
ONNX int8 >= 3.5x), each stating met / not met and the measured ratio.

    nice .venv/bin/python -m benchmarks.bench_batch1 --quick   # smoke test: 85 % x 20 % only (2.3 min
                                                                # at load average 6; about half idle)
"""
from __future__ import annotations

import os
import shlex
import sys

for _v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ["EGRU_COMPILE_CACHE"] = "off"      # the compile time reported is a real compile, never a cache copy

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent

from benchmarks import bandwidth  # noqa: E402
from benchmarks.common import build_model, interleaved_steps, strip_decoder  # noqa: E402
from benchmarks.common import calibrate_runner as calibrate_thresholds  # noqa: E402

from egru_compile.frontend import trace_model  # noqa: E402
from egru_compile.passes import PassManager  # noqa: E402
from egru_compile.runtime import open_artifact, traffic  # noqa: E402
from egru_compile.targets import get_target  # noqa: E402
import egru_compile.targets.tvm as K  # noqa: E402

compile_onnx, compile_tvm = get_target("onnx"), get_target("tvm")     # compile + seal, as the CLI does


def quantize_dense(src: Path, dst: Path) -> None:
    """The dense int8 peer: a copy of the dense ORT artifact `src` whose model.onnx is ONNX Runtime's own
    ``quantize_dynamic`` of it (int8 weights), resealed (`artifact.seal`) so `open_artifact` opens it."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from egru_compile.artifact import seal
    shutil.copytree(src, dst)
    quantize_dynamic(str(src / "model.onnx"), str(dst / "model.onnx"), weight_type=QuantType.QInt8)
    seal(dst)


def tvm_has_weight_dtype() -> bool:
    """Whether this build's tvm target takes --weight-dtype (issue 17 item 2; int8 rows in the TVM kernels)."""
    from dataclasses import fields
    from egru_compile.targets.registry import get
    return any(f.name == "weight_dtype" for f in fields(get("tvm").options))


def tvm_has_u8_events() -> bool:
    """Whether the tvm target takes event_dtype u8 and this CPU has AVX512-VNNI."""
    from dataclasses import fields
    from egru_compile.targets.registry import get
    from egru_compile.targets.tvm.spec import has_vnni
    return any(f.name == "event_dtype" for f in fields(get("tvm").options)) and has_vnni()


DENSE_ORT = {"event_gating": False, "event_decoder": False, "fold_embedding": False, "sparse_storage": False,
             "extras": False}
VARIANTS = ["torch", "ort-dense", "ort-dense-int8", "onnx", "onnx-int8", "tvm"]     # + TVM_INT8 when the build has them
#: the TVM int8 variants: (name, artifact folder, compile options); the second reads uint8 events (W8A8, as
#: ORT's quantize_dynamic does; AVX512-VNNI)
TVM_INT8 = (("tvm-int8", "tvm8", {"weight_dtype": "int8"}),
            ("tvm-int8-u8", "tvm8u8", {"weight_dtype": "int8", "event_dtype": "u8"}))
SCOPES = ("rnn", "token")


# ------------------------------------------------------------------------------------------------ TVM helpers
def build_rnn_only(spec: K.EGRUKernelSpec):
    """The fused step with an empty decoder (one store so the logits argument stays used)."""
    return K.build_egru_step(spec, with_decoder=False)


def prefix_call(mod, spec_k: K.EGRUKernelSpec, rt: K.TVMStepRunner):
    """Callable running the first len(spec_k.hidden_sizes) layers (no decoder) on rt's own tensors."""
    import tvm
    args = []
    for n in K.step_arg_names(spec_k):
        if n == "dwt":    # unused (decoder emptied) but its declared shape must match
            args.append(tvm.runtime.tensor(np.zeros((spec_k.hidden_sizes[-1], spec_k.vocab_size), np.float32)))
        else:
            args.append(rt.tensors[n])
    fn, lg = mod["egru_step"], rt._logits
    return lambda tok: fn(tok, *args, lg)


# ------------------------------------------------------------------------------------------------ torch
def torch_fns(model, toks_t):
    state = [None]

    def reset():
        state[0] = model.init_state(1)

    @torch.no_grad()
    def token(i):
        _, state[0] = model.step(toks_t[i], state[0])

    @torch.no_grad()
    def rnn(i):
        x = model.embeddings(toks_t[i])
        new = []
        for layer, st in zip(model.rnns, state[0]):
            x, st = layer(x, st)
            new.append(st)
        state[0] = new
    return reset, token, rnn, state


# ------------------------------------------------------------------------------------------------ timing
#: the per-token clock (``--clock``): "thread" = this thread's CPU time (every variant computes on the calling
#: thread: ORT intra-op 1 / sequential, torch 1 thread, TVM's serial kernels), so time spent descheduled by
#: other processes on a shared machine is not counted (cache and memory contention still is); "wall" =
#: time.perf_counter. CPU_CHECK accumulates process vs thread CPU time over the timed loops (a large excess
#: would mean work on other threads that "thread" misses).
CLOCK = {"fn": time.thread_time, "name": "thread"}
CPU_CHECK = {"process": 0.0, "thread": 0.0}
_RNN8: dict = {}      # decoder-less int8 TVM step per kernel spec


def time_interleaved(fns: dict, n_tokens: int, rounds: int, burn: int = 10) -> dict:
    """fns: name -> (reset, step(i)). Per-token seconds lists (all rounds), on the CLOCK; the process and thread
    CPU time spent is added to CPU_CHECK."""
    p0, t0 = time.process_time(), time.thread_time()
    res = interleaved_steps(fns, n_tokens, rounds, burn, clock=CLOCK["fn"])
    CPU_CHECK["process"] += time.process_time() - p0
    CPU_CHECK["thread"] += time.thread_time() - t0
    return res


# ------------------------------------------------------------------------------------------------ one point
def measure_point(model, sparsity, act, cal, rnn_mod, stream, a, tmp: Path, hidden, profile_mods=None,
                  roof: bool = False):
    V, E = a.vocab, a.emb
    row = {"sparsity": sparsity, "target_activity": act, "calib_tokens": a.calib_tokens}
    t0 = time.perf_counter()
    thr = calibrate_thresholds(cal, act, stream, steps=40, iters=a.calib_iters)
    with torch.no_grad():
        for layer, t in zip(model.rnns, thr):
            layer.thr.fill_(min(max(t, 0.0), 1.0))
    row["thresholds"] = [round(float(t), 5) for t in thr]
    row["calib_s"] = round(time.perf_counter() - t0, 2)

    # ---- compile (timed: frontend + passes, and compile_tvm)
    t0 = time.perf_counter()
    raw = trace_model(model)
    t1 = time.perf_counter()
    opt = PassManager(None).run(raw)
    t2 = time.perf_counter()
    d = tmp / f"s{sparsity}_a{act}"
    (d / "tvm").mkdir(parents=True)     # compile_tvm writes into an existing directory (the CLI makes it)
    compile_tvm(opt, None, d / "tvm", {})
    t3 = time.perf_counter()
    row["compile"] = {"trace_s": round(t1 - t0, 2), "passes_s": round(t2 - t1, 2), "compile_tvm_s": round(t3 - t2, 2),
                      "total_s": round(t3 - t0, 2)}
    compile_onnx(opt, None, d / "onnx_token", {})
    compile_onnx(strip_decoder(opt), None, d / "onnx_rnn", {})
    q8 = PassManager(["quantize-int8"]).run(opt)
    cal8 = {}                           # --calib-tokens: the int8 decoder rows' accuracy check, as --calib-data
    if a.calib_tokens > 0:
        from egru_compile.runtime.evaluate import graph_perplexity
        cal8 = {"calib_token_ids": np.asarray(stream[: a.calib_tokens]), "perplexity": graph_perplexity}
    compile_onnx(q8, None, d / "onnx8_token", {"weight_dtype": "int8", **cal8})
    compile_onnx(strip_decoder(q8), None, d / "onnx8_rnn", {"weight_dtype": "int8"})
    compile_onnx(raw, None, d / "dense_token", DENSE_ORT)
    compile_onnx(strip_decoder(raw), None, d / "dense_rnn", DENSE_ORT)
    for scope in ("token", "rnn"):      # the dense int8 peer: ORT's own quantize_dynamic of the dense graph
        quantize_dense(d / f"dense_{scope}", d / f"dense8_{scope}")
    for var, folder, opts in TVM_INT8:      # int8 rows in the TVM kernels (f32 / uint8 events), when the build has them
        if var not in VARIANTS:
            continue
        try:
            (d / folder).mkdir()
            compile_tvm(q8, None, d / folder, {**opts, **cal8})
        except Exception as e:  # noqa: BLE001 - report and carry on without the variant
            row[f"{var}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    del raw, opt, q8
    row["decoder_rows"] = {"onnx-int8": json.loads((d / "onnx8_token" / "manifest.json").read_text())
                           .get("decoder_precision", {}).get("dtype", "f32")}
    for var, folder, _ in TVM_INT8:
        if (d / folder / "manifest.json").exists():
            man = json.loads((d / folder / "manifest.json").read_text())
            row["decoder_rows"][var] = man["spec"]["decoder_dtype"]
            if man.get("event_precision", {}).get("ppl_rel_change") is not None:
                row[f"{var}_event_ppl_change"] = man["event_precision"]["ppl_rel_change"]
    gc.collect()

    ort = {n: open_artifact(d / n, threads=1)
           for n in ("onnx_token", "onnx_rnn", "onnx8_token", "onnx8_rnn", "dense_token", "dense_rnn",
                     "dense8_token", "dense8_rnn")}
    for n in ("onnx_rnn", "onnx8_rnn", "dense_rnn", "dense8_rnn"):   # the stripped graphs output the last layer's y; tokens are still 0..V-1
        ort[n].vocab_size = V
    tv = open_artifact(d / "tvm")
    rt = tv.rt
    step_fn, args, lg = rt._step_fn, rt._args, rt._logits
    rnn_fn = rnn_mod["egru_step"]
    toks = [int(t) for t in stream]
    toks_t = [torch.tensor([t]) for t in toks]
    t_reset, t_token, t_rnn, t_state = torch_fns(model, toks_t)

    tv8 = {}
    for var, folder, _ in TVM_INT8:
        if var not in VARIANTS or f"{var}_error" in row:
            continue
        try:
            tv8[var] = open_artifact(d / folder)
            if not any(np.asarray(x).dtype == np.int8 for x in tv8[var].rt.views.values()):
                raise ValueError("the artifact compiled with weight_dtype int8 holds no int8 tensor")
        except Exception as e:  # noqa: BLE001
            row[f"{var}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            tv8.pop(var, None)
    fns = {
        ("torch", "rnn"): (t_reset, t_rnn),
        ("ort-dense", "rnn"): (ort["dense_rnn"].reset, lambda i: ort["dense_rnn"].step(toks[i])),
        ("ort-dense-int8", "rnn"): (ort["dense8_rnn"].reset, lambda i: ort["dense8_rnn"].step(toks[i])),
        ("onnx", "rnn"): (ort["onnx_rnn"].reset, lambda i: ort["onnx_rnn"].step(toks[i])),
        ("onnx-int8", "rnn"): (ort["onnx8_rnn"].reset, lambda i: ort["onnx8_rnn"].step(toks[i])),
        ("tvm", "rnn"): (rt.reset, lambda i: rnn_fn(toks[i], *args, lg)),
        ("torch", "token"): (t_reset, t_token),
        ("ort-dense", "token"): (ort["dense_token"].reset, lambda i: ort["dense_token"].step(toks[i])),
        ("ort-dense-int8", "token"): (ort["dense8_token"].reset, lambda i: ort["dense8_token"].step(toks[i])),
        ("onnx", "token"): (ort["onnx_token"].reset, lambda i: ort["onnx_token"].step(toks[i])),
        ("onnx-int8", "token"): (ort["onnx8_token"].reset, lambda i: ort["onnx8_token"].step(toks[i])),
        ("tvm", "token"): (rt.reset, lambda i: step_fn(toks[i], *args, lg)),
    }
    for var, art in tv8.items():
        r8 = art.rt
        f8, a8, l8 = r8._step_fn, r8._args, r8._logits
        fns[(var, "token")] = (r8.reset, lambda i, f8=f8, a8=a8, l8=l8: f8(toks[i], *a8, l8))
        try:        # the decoder-less program of the int8 spec (the RNN-stack scope)
            key = repr(r8.spec)         # the library depends on the spec only: build once per run
            if key not in _RNN8:
                _RNN8[key] = K.build_egru_step(r8.spec, with_decoder=False)
            m8 = _RNN8[key]["egru_step"]
            fns[(var, "rnn")] = (r8.reset, lambda i, m8=m8, a8=a8, l8=l8: m8(toks[i], *a8, l8))
        except Exception as e:  # noqa: BLE001
            row[f"{var}_rnn_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

    # ---- activity / MACs on the stream (untimed), from each program's own events
    burn, N = 10, a.tokens
    L = len(hidden)
    tv.reset()
    ev_t, macs_t = [], []
    fan_w, fan_r = tv.fan_w, tv.fan_r
    scat = np.zeros((L, 2))     # per layer: nnz touched by the input / recurrent scatters
    for i in range(burn + N):
        prev = [rt.views[f"ei{l}"][: int(rt.views[f"en{l}"][0])].copy() for l in range(L)]
        tv.step(toks[i])
        if i >= burn:
            ev_t.append(tv.last_stats.events)
            macs_t.append(tv.last_stats.macs)
            for l in range(L):
                scat[l, 1] += fan_r[l][prev[l]].sum()
                if l > 0:
                    cur = rt.views[f"ei{l - 1}"][: int(rt.views[f"en{l - 1}"][0])]
                    scat[l, 0] += fan_w[l][cur].sum()
    scat /= N
    ev_t = np.asarray(ev_t, float)
    ox = ort["onnx_token"]
    ox.reset()
    ev_o = []
    for i in range(burn + N):
        ox.step(toks[i])
        if i >= burn:
            ev_o.append(ox.last_stats.events)
    t_reset()
    ev_p = []
    for i in range(burn + N):
        t_token(i)
        if i >= burn:
            ev_p.append([int((y != 0).sum()) for _, y in t_state[0]])
    row["activity_tvm"] = list(ev_t.mean(0) / np.asarray(hidden))
    row["activity_onnx"] = list(np.mean(ev_o, 0) / np.asarray(hidden))
    row["activity_torch"] = list(np.mean(ev_p, 0) / np.asarray(hidden))
    dense_rnn = sum(3 * h * (n + h) for n, h in zip([E] + hidden[:-1], hidden))
    dyn_rnn = float(np.mean(macs_t))
    dec_dense, dec_dyn = hidden[-1] * V, float(ev_t[:, -1].mean()) * V
    row["macs"] = {"dense_rnn": dense_rnn, "dynamic_rnn": dyn_rnn, "dense_decoder": dec_dense,
                   "dynamic_decoder": dec_dyn, "ratio_rnn": dense_rnn / dyn_rnn,
                   "ratio_token": (dense_rnn + dec_dense) / (dyn_rnn + dec_dyn)}
    row["scatter_nnz_per_layer"] = scat.tolist()

    # ---- timing
    res = time_interleaved({f"{v}|{s}": f for (v, s), f in fns.items()}, N, a.rounds, burn)
    for key, ts in res.items():
        row[f"{key.replace('|', '_')}_us"] = float(np.median(ts) * 1e6)
        row[f"{key.replace('|', '_')}_us_min"] = float(np.min(ts) * 1e6)

    if profile_mods is not None:
        row["profile"] = profile(profile_mods, rt, toks, N, a.rounds, burn, hidden, V, E, scat, ev_t, res)
    if roof:
        row["roofline"] = roofline(model, d, tv, tv8, ort, toks, burn, N, row, res, a)
    del ort, tv, rt, fns, tv8
    gc.collect()
    return row


def profile(mods, rt, toks, N, rounds, burn, hidden, V, E, scat, ev_t, res):
    """Layer by layer (prefix programs without decoder), gate update alone, bytes touched vs bandwidth."""
    import tvm
    L = len(hidden)
    calls = {f"layers<{k}": prefix_call(mods["prefix"][k], mods["spec"][k], rt) for k in range(1, L + 1)}
    fns = {k: (rt.reset, (lambda c: (lambda i: c(toks[i])))(c)) for k, c in calls.items()}
    pr = time_interleaved(fns, N, rounds, burn)
    pre = [float(np.median(pr[f"layers<{k}"]) * 1e6) for k in range(1, L + 1)]
    layer_us = [pre[0]] + [pre[k] - pre[k - 1] for k in range(1, L)]
    token_us = float(np.median(res["tvm|token"]) * 1e6)
    rnn_us = float(np.median(res["tvm|rnn"]) * 1e6)
    # gate update + event compression alone (kernel library 'update'), per layer size, cache-hot
    lib = mods["lib"]
    upd_us = []
    rng = np.random.default_rng(0)
    for h in hidden:
        T_ = tvm.runtime.tensor
        gx, gh = T_(rng.standard_normal(3 * h).astype(np.float32)), T_(rng.standard_normal(3 * h).astype(np.float32))
        thr, c, y = T_(np.full(h, 0.5, np.float32)), T_(np.zeros(h, np.float32)), T_(np.zeros(h, np.float32))
        ei, ev, en = T_(np.zeros(h, np.int32)), T_(np.zeros(h, np.float32)), T_(np.zeros(1, np.int32))
        f = lib["update"]
        ts = []
        for _ in range(300):
            t0 = CLOCK["fn"]()
            f(gx, gh, thr, c, y, ei, ev, en)
            ts.append(CLOCK["fn"]() - t0)
        upd_us.append(float(np.median(ts) * 1e6))
    # bytes touched per step
    spec = rt.spec
    out = {"prefix_us": pre, "layer_us": layer_us, "rnn_us": rnn_us, "token_us": token_us,
           "decoder_us": token_us - rnn_us, "update_us": upd_us, "layers": []}
    for l, h in enumerate(hidden):
        ib = np.dtype(spec.layer_index_dtype(l)).itemsize
        n_in = scat[l, 0] if l > 0 else 0.0
        ev_in = float(ev_t[:, l - 1].mean()) if l > 0 else 0.0
        ev_rec = float(ev_t[:, l].mean())
        nnz = n_in + scat[l, 1]
        wbytes = nnz * (ib + 4) + (ev_in + ev_rec) * 8            # idx + val per nnz, 2 ptrs per active column
        if l == 0:
            wbytes += 3 * h * 4                                     # table row E @ W0
        sbytes = 4 * h * 4 * 3 + h * 4 * 6                          # acc init/RMW/read, c,y,thr,ei,ev
        t = layer_us[l]
        out["layers"].append({"layer": l, "scatter_nnz": float(nnz), "weight_bytes": float(wbytes),
                              "state_bytes": float(sbytes), "us": t, "update_us": upd_us[l],
                              "scatter_us": t - upd_us[l], "ns_per_nnz": (t - upd_us[l]) * 1e3 / max(nnz, 1),
                              "GBps": (wbytes + sbytes) / (t * 1e-6) / 1e9})
    ev_last = float(ev_t[:, -1].mean())
    passes = np.ceil(ev_last / max(spec.decoder_unroll, 1))
    dbytes = ev_last * V * 4 + passes * V * 4 * 2 + V * 8
    out["decoder"] = {"active_rows": ev_last, "bytes": float(dbytes),
                      "GBps": dbytes / max(out["decoder_us"], 1e-3) / 1e3}
    return out


# ------------------------------------------------------------------------------------------------ roofline
ROOF_TARGETS = (("tvm f32", "tvm"), ("tvm int8", "tvm-int8"), ("tvm int8 u8", "tvm-int8-u8"), ("onnx f32", "onnx"),
                ("onnx int8", "onnx-int8"),
                ("dense ORT", "ort-dense"), ("dense PyTorch", "torch"))


def roofline(model, d: Path, tv, tv8, ort, toks, burn, N, row, res, a) -> dict:
    """Bytes touched per token per target and part (`egru_compile.runtime.traffic`), this core's bandwidth measured now
    (`bandwidth`), and the rows of the roofline table (times: the medians just measured)."""
    accs = {"tvm f32": traffic.tvm_accounting(tv, toks, burn, N, "tvm f32"),
            "onnx f32": traffic.onnx_accounting(d / "onnx_token", ort["onnx_token"], toks, burn, N, "onnx f32"),
            "onnx int8": traffic.onnx_accounting(d / "onnx8_token", ort["onnx8_token"], toks, burn, N, "onnx int8")}
    for name, var in (("tvm int8", "tvm-int8"), ("tvm int8 u8", "tvm-int8-u8")):
        if var in tv8:
            accs[name] = traffic.tvm_accounting(tv8[var], toks, burn, N, name)
    for name in ("dense ORT", "dense PyTorch"):
        accs[name] = traffic.dense_accounting(model, name)
    rows = sorted({float(f"{p.row_bytes:.2g}") for acc in accs.values() for p in acc.parts   # 2 digits
                   if not p.stream and p.rows})
    bw = bandwidth.measure([r for r in rows if r > 0])
    med = {k: float(np.median(v) * 1e6) for k, v in res.items()}
    prof = row.get("profile") or {}
    out = {"bandwidth": bw, "targets": {}, "lines": [], "conclusions": []}
    for name, var in ROOF_TARGETS:
        if name not in accs:
            continue
        t = {}
        if f"{var}|token" in med:
            t["whole token"] = med[f"{var}|token"]
        if f"{var}|rnn" in med:
            t["RNN stack"] = med[f"{var}|rnn"]
            if "whole token" in t:
                t["decoder"] = t["whole token"] - t["RNN stack"]
        if var == "tvm" and prof:
            for l, us in enumerate(prof["layer_us"]):
                t[f"layer {l}"] = us
        lines, summ = bandwidth.roofline_rows(accs[name], t, bw, bandwidth.gather_at)
        out["lines"] += lines
        out["targets"][name] = {"parts": [vars(p) | {"row_bytes": p.row_bytes} for p in accs[name].parts],
                                "times_us": t, "summary": summ, "notes": accs[name].notes}
        if summ["us"]:
            out["conclusions"].append(bandwidth.conclusion(name, summ, bw["caches"].get("L3", 0)) + " "
                                      + "; ".join(accs[name].notes) + ".")
    return out


U8_LABEL = "TVM int8 with uint8 events (W8A8, like the peer) whole token"


def goal_lines(goal: dict, tvm_int8_state: str) -> list[str]:
    """Issue 17 items 1 and 2 at 85 % / 20 %: whole-token speed-up over the best dense peer (ORT or PyTorch)."""
    best = min(goal["torch_token_us"], goal["ort-dense_token_us"])
    who = "PyTorch" if goal["torch_token_us"] <= goal["ort-dense_token_us"] else "ORT dense"
    out = []
    for label, key, need in (("TVM f32 whole token", "tvm", 15), ("TVM int8 whole token", "tvm-int8", 30),
                             (U8_LABEL, "tvm-int8-u8", 30), ("ONNX int8 whole token", "onnx-int8", 3.5)):
        us = goal.get(f"{key}_token_us")
        if us is None:
            out.append(f"* {label} >= {need:g}x the best dense peer: **not available in this build** "
                       f"({tvm_int8_state}).")
            continue
        r = best / us
        out.append(f"* {label} >= {need:g}x the best dense peer ({who}, {best:,.0f} µs): {us:,.0f} µs = "
                   f"**{r:.1f}x — {'met' if r >= need else 'not met'}**.")
    q8 = goal.get("ort-dense-int8_token_us")
    if q8 is not None:                  # issue 26: the peer a user would pick instead
        for label, key, need in (("TVM int8 whole token", "tvm-int8", 10), (U8_LABEL, "tvm-int8-u8", 10),
                                 ("TVM f32 whole token", "tvm", None)):
            us = goal.get(f"{key}_token_us")
            if us is None:
                continue
            r = q8 / us
            verdict = f" — {'met' if r >= need else 'not met'}" if need else ""
            out.append(f"* {label}{f' >= {need:g}x' if need else ''} vs the dense int8 peer (ORT quantize_dynamic, "
                       f"{q8:,.0f} µs): {us:,.0f} µs = **{r:.1f}x{verdict}**.")
    return out


# ------------------------------------------------------------------------------------------------ report
def fmt_table(rows, scope):
    cols = [("onnx", "ONNX-compiled"), ("onnx-int8", "ONNX int8"), ("tvm", "TVM")]
    for var, title in (("tvm-int8", "TVM int8"), ("tvm-int8-u8", "TVM int8 + uint8 events")):
        if any(f"{var}_{scope}_us" in r for r in rows):
            cols.append((var, title))
    cols.insert(0, ("ort-dense-int8", "ORT dense int8 (quantize_dynamic)"))
    head = ("| weight sparsity | activity target / measured (L0/L1/L2) | MAC ratio | torch µs | ORT dense µs | "
            + " | ".join(f"{t} µs (vs torch / vs ORT dense)" for _, t in cols) + " |")
    out = [head, "|---" * (5 + len(cols)) + "|"]
    for r in rows:
        tu, du = r[f"torch_{scope}_us"], r[f"ort-dense_{scope}_us"]
        act = "/".join(f"{x:.0%}" for x in r["activity_tvm"])
        cells = []
        for v, _ in cols:
            x = r.get(f"{v}_{scope}_us")
            cells.append("—" if x is None else f"{x:,.0f} ({tu / x:.1f}x / {du / x:.1f}x)")
        out.append(f"| {r['sparsity']:.0%} | {r['target_activity']:.0%} / {act} | "
                   f"{r['macs'][f'ratio_{scope}']:.1f}x | {tu:,.0f} | {du:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, scope in zip(axs, SCOPES):
        mr = [r["macs"][f"ratio_{scope}"] for r in rows]
        for v, mk in (("tvm", "o"), ("tvm-int8", "P"), ("tvm-int8-u8", "*"), ("onnx", "s"), ("onnx-int8", "D"),
                      ("ort-dense-int8", "v"), ("ort-dense", "^")):
            if not all(f"{v}_{scope}_us" in r for r in rows):
                continue                                    # a variant this build or CPU does not have
            sp = [r[f"torch_{scope}_us"] / r[f"{v}_{scope}_us"] for r in rows]
            ax.scatter(mr, sp, marker=mk, label=f"{v} / torch dense")
            if v == "tvm":
                for r, x, y in zip(rows, mr, sp):
                    ax.annotate(f"{r['sparsity']:.0%},{r['target_activity']:.0%}", (x, y), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
        lim = [1, max(mr + [2]) * 1.3]
        ax.plot(lim, lim, "k--", lw=0.8, label="speed-up = MAC ratio")
        if scope == "rnn":
            ax.axhline(15, color="r", lw=0.8, ls=":", label="issue-17 goal: RNN stack 15x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("theoretical MAC ratio (dense / dynamic)")
        ax.set_ylabel("realized speed-up vs PyTorch dense (median)")
        ax.set_title("RNN stack" if scope == "rnn" else "whole token (+ decoder)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("EGRU 750/1350/1350/750, V=10000, batch 1, 1 thread (labels: weight sparsity, activity)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--emb", type=int, default=750)
    ap.add_argument("--hidden", default="1350,1350,750")
    ap.add_argument("--sparsity", default="0,0.5,0.85,0.95")
    ap.add_argument("--activity", default="0.1,0.2,0.3")
    ap.add_argument("--tokens", type=int, default=60, help="timed tokens per variant per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calib-iters", type=int, default=12)
    ap.add_argument("--calib-tokens", type=int, default=100,
                    help="tokens of the timed stream given to the int8 compiles as calibration data (their decoder "
                         "rows are int8 when the perplexity changes by <= 0.1 %%, as with --calib-data); 0: none, "
                         "the int8 decoders stay f32")
    ap.add_argument("--quick", action="store_true", help="smoke test (< 2 min): only 85 %% sparsity x 20 %% "
                    "activity, 30 tokens x 3 rounds, 8 calibration iterations; the profile and roofline included")
    ap.add_argument("--clock", choices=("thread", "wall"), default="thread",
                    help="per-token clock: this thread's CPU time (default; robust on a shared machine) or wall time")
    ap.add_argument("--no-profile", action="store_true", help="skip the breakdown at 85 %% / 20 %%")
    ap.add_argument("--batch-tokens", type=int, default=2048,
                    help="PTB test tokens of the B = 16 goal lines (issue 26 item 2: `bench_batch.batch16_goals`, "
                         "best of 2 rounds); 0: leave them out")
    ap.add_argument("--out", default=str(HERE / "results" / "batch1"), help="prefix of the .md/.json/.png")
    a = ap.parse_args(argv)
    if a.quick:
        a.sparsity, a.activity, a.tokens, a.rounds, a.calib_iters = "0.85", "0.2", 30, 3, 8
        a.batch_tokens = min(a.batch_tokens, 256)
    CLOCK.update(fn=time.thread_time if a.clock == "thread" else time.perf_counter, name=a.clock)
    a.tvm_int8 = tvm_has_weight_dtype()
    tvm_int8_state = ("tvm target takes --weight-dtype" if a.tvm_int8 else
                      "the tvm target has no weight_dtype option yet")
    if a.tvm_int8:
        VARIANTS.append("tvm-int8")
        if tvm_has_u8_events():
            VARIANTS.append("tvm-int8-u8")
    load0 = os.getloadavg()
    sps = [float(x) for x in a.sparsity.split(",")]
    acts = [float(x) for x in a.activity.split(",")]
    hidden = [int(h) for h in a.hidden.split(",")]
    torch.set_num_threads(1)
    import onnxruntime
    import tvm
    print(f"# EGRU vocab {a.vocab}, emb {a.emb}, hidden {hidden}; torch {torch.__version__} "
          f"({torch.get_num_threads()} thread), onnxruntime {onnxruntime.__version__} (intra-op 1), TVM "
          f"{tvm.__version__} (TVM_NUM_THREADS={os.environ['TVM_NUM_THREADS']}, {K.default_target()})", flush=True)
    print(f"# {a.tokens} timed tokens x {a.rounds} interleaved rounds per variant; per-token medians "
          f"({a.clock} clock)", flush=True)
    rng = np.random.default_rng(0)
    stream = rng.integers(0, a.vocab, 10 + max(a.tokens, 40) + 5)

    spec = K.EGRUKernelSpec(a.vocab, a.emb, tuple(hidden))
    t0 = time.perf_counter()
    rnn_mod = build_rnn_only(spec)      # RNN-stack timing of the TVM artifacts, and threshold calibration
    print(f"# built the decoder-less step: {time.perf_counter() - t0:.1f} s", flush=True)
    want_roof = not a.no_profile and 0.85 in sps and 0.2 in acts
    want_profile = want_roof and not a.quick
    mods = None
    if want_profile:
        mods = {"prefix": {len(hidden): rnn_mod}, "spec": {len(hidden): spec},
                "lib": K.build_kernel_library(spec.layer_index_dtype(0))}
        for k in range(1, len(hidden)):
            sk = K.EGRUKernelSpec(a.vocab, a.emb, tuple(hidden[:k]))
            mods["spec"][k], mods["prefix"][k] = sk, build_rnn_only(sk)

    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_batch1_") as td:
        for sp in sps:
            model = build_model(a.vocab, a.emb, hidden, sp)
            cal = K.TVMStepRunner.from_model(model, module=rnn_mod)      # events only: no decoder needed
            for act in acts:
                here = sp == 0.85 and act == 0.2
                prof = mods if (want_profile and here) else None
                r = measure_point(model, sp, act, cal, rnn_mod, stream, a, Path(td), hidden, prof,
                                  roof=want_roof and here)
                rows.append(r)
                c = r["compile"]
                print(f"sparsity {sp:.0%} activity {act:.0%}: measured tvm "
                      f"{'/'.join(f'{x:.3f}' for x in r['activity_tvm'])} onnx "
                      f"{'/'.join(f'{x:.3f}' for x in r['activity_onnx'])} torch "
                      f"{'/'.join(f'{x:.3f}' for x in r['activity_torch'])}; MAC ratio rnn "
                      f"{r['macs']['ratio_rnn']:.1f}x token {r['macs']['ratio_token']:.1f}x; compile trace "
                      f"{c['trace_s']} s + passes {c['passes_s']} s + compile_tvm {c['compile_tvm_s']} s", flush=True)
                print("    " + "  ".join(f"{s}: " + " ".join(f"{v}={r[f'{v}_{s}_us']:.0f}" for v in VARIANTS
                                                             if f"{v}_{s}_us" in r)
                                         for s in SCOPES) + " µs", flush=True)
                for k in [f"{v}_{e}" for v, _, _ in TVM_INT8 for e in ("error", "rnn_error")]:
                    if k in r:
                        print(f"    {k}: {r[k]}", flush=True)
                shutil_rm(Path(td))
            del cal, model
            gc.collect()
    wall = time.perf_counter() - t_all

    clock = ("this thread's CPU time (time descheduled by other processes excluded)" if a.clock == "thread"
             else "wall time")
    lines = [f"EGRU {a.emb}/{'/'.join(map(str, hidden))}, vocab {a.vocab}, batch 1, 1 thread; per-token µs ({clock}), "
             f"median of {a.tokens} tokens x {a.rounds} interleaved rounds; speed-ups vs PyTorch dense (and vs ORT dense "
             "for TVM); MAC ratio = dense / dynamic MACs; measured activity from the TVM program's own events.", ""]
    for scope, title in (("rnn", f"RNN stack ({len(hidden)} EGRU layers; no decoder)"), ("token", "Whole token (incl. decoder)")):
        lines += [f"**{title}**", "", fmt_table(rows, scope), ""]
    comp = [r["compile"] for r in rows]
    tot = [c["total_s"] for c in comp]
    tvm_s = [c["compile_tvm_s"] for c in comp]
    lines.append(f"Compile time, PTB-size model, target tvm (trace + default passes + compile_tvm): median "
                 f"{np.median(tot):.1f} s (min {min(tot):.1f}, max {max(tot):.1f}); of which compile_tvm "
                 f"{np.median(tvm_s):.1f} s (goal <= 20 s: {'met' if max(tot) <= 20 else 'NOT met'}).")
    goal = next((r for r in rows if r["sparsity"] == 0.85 and r["target_activity"] == 0.2), None)
    if goal is not None:
        rt_ = goal["torch_rnn_us"] / goal["tvm_rnn_us"]
        rd_ = goal["ort-dense_rnn_us"] / goal["tvm_rnn_us"]
        ok = rt_ >= 15 and rd_ >= 15
        lines.append(f"Goal at 85 % / 20 %: TVM RNN stack {goal['tvm_rnn_us']:.0f} µs = 1/{rt_:.1f} of PyTorch dense "
                     f"({goal['torch_rnn_us']:.0f} µs) and 1/{rd_:.1f} of ORT dense ({goal['ort-dense_rnn_us']:.0f} µs)"
                     f": {'met' if ok else 'NOT met'} (goal 1/15 of each).")
        p = goal.get("profile")
        if p:
            lines += ["", "**Profile at 85 % / 20 %** (TVM, per-token medians; layer = difference of decoder-less "
                      "programs for the first k layers; update = gate update + event compression kernel alone)", "",
                      "| part | µs | scatter nnz/step | bytes/step | ns/nnz (scatter) | GB/s |", "|---|---|---|---|---|---|"]
            for li in p["layers"]:
                lines.append(f"| layer {li['layer']} (scatter {li['scatter_us']:.0f} + update {li['update_us']:.0f}) | "
                             f"{li['us']:.0f} | {li['scatter_nnz']:,.0f} | "
                             f"{(li['weight_bytes'] + li['state_bytes']) / 1024:,.0f} KiB | {li['ns_per_nnz']:.2f} | "
                             f"{li['GBps']:.1f} |")
            dd = p["decoder"]
            lines.append(f"| decoder ({dd['active_rows']:.0f} active rows x V) | {p['decoder_us']:.0f} | - | "
                         f"{dd['bytes'] / 1024:,.0f} KiB | - | {dd['GBps']:.1f} |")
            lines.append(f"| torch dense RNN stack (fp32 weights {goal['macs']['dense_rnn'] * 4 / 2 ** 20:.0f} MiB) | "
                         f"{goal['torch_rnn_us']:.0f} | - | - | - | "
                         f"{goal['macs']['dense_rnn'] * 4 / (goal['torch_rnn_us'] * 1e-6) / 1e9:.1f} |")
        lines += ["", "**Goals of issue 26 (items 1, 3) at 85 % / 20 %**, whole token (decoder + logits included), "
                  "best dense peer = the faster of PyTorch dense and ORT dense, same weights, 1 thread:", ""]
        errors = "; ".join(f"{v}: {goal[f'{v}_error']}" for v, _, _ in TVM_INT8 if f"{v}_error" in goal)
        lines += goal_lines(goal, errors or tvm_int8_state)
        if goal.get("decoder_rows"):
            lines.append("* decoder rows of the int8 variants (the compile's calibration check, --calib-tokens "
                         f"{goal.get('calib_tokens', 0)}): "
                         + ", ".join(f"{k} {v}" for k, v in goal["decoder_rows"].items()) + ".")
        if "tvm-int8-u8_event_ppl_change" in goal:
            lines.append("* uint8 events (tvm-int8-u8): calibration perplexity change printed by its compile, "
                         "this artifact's kernels vs the same int8 kernels with float events: "
                         f"{100 * goal['tvm-int8-u8_event_ppl_change']:+.4f} %.")
        for v, _, _ in TVM_INT8:
            if f"{v}_rnn_error" in goal:
                lines.append(f"  ({v} RNN-stack scope: {goal[f'{v}_rnn_error']})")
        rf = goal.get("roofline")
        if rf:
            bw = rf["bandwidth"]
            lines += ["", "**Distance to the memory roofline at 85 % / 20 %** (issue 17 item 4). This core, single "
                      "thread, measured in this run (`benchmarks/bandwidth.py`; GB/s of reads; *best* of 15 "
                      "batches is used below as the roofline):", "", bandwidth.fmt(bw), "",
                      "Bytes of weights and indices touched per token (`egru_compile/runtime/traffic.py`: counted "
                      "from each artifact's stored weights and the activity of the timed stream; activations and "
                      "state not counted), the median time of that part, the achieved GB/s and its share of each "
                      "roofline. *Stream* = a sequential read out of a buffer of that level; *gather roofline* = "
                      "the time random rows of each part's mean row size take out of an L3- / DRAM-sized buffer "
                      "(dense peers: stream), as a share of the measured time. TVM layers are timed separately "
                      "(decoder-less programs for the first k layers, differences); W and R of one layer are not "
                      "separable (one fused loop) and ONNX / dense layers not at all (one session call): those "
                      "rows give bytes only, and the RNN-stack row divides the stack's bytes by the stack's time. "
                      "decoder = whole token − RNN stack.", "", bandwidth.HEADER] + rf["lines"]
            lines += ["", "Conclusions (whole token):", ""] + rf["conclusions"]
    if goal is not None and a.batch_tokens > 0:          # issue 26 item 2, same process, after the batch-1 runs
        from benchmarks.bench_batch import batch16_goals
        with tempfile.TemporaryDirectory(prefix="bench_batch1_b16_") as td:
            _, b16 = batch16_goals(Path(td), a.emb, a.hidden, 0.85, 0.2, tokens=a.batch_tokens)
        lines += ["", f"**Goals of issue 26 item 2** (batched streams, `eval --batch-size 16`, the first "
                  f"{a.batch_tokens:,} PTB test tokens, PTB vocabulary, 85 % / 20 %, best of 2 interleaved runs):",
                  ""] + [f"* {x}" for x in b16]
    load1 = os.getloadavg()
    lines += ["", f"Load average (uptime; 2 cores shared with other jobs): {load0[0]:.2f} / {load0[1]:.2f} / "
              f"{load0[2]:.2f} at the start, {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} at the end; the "
              f"timings are medians of interleaved rounds ({a.clock} clock; process / thread CPU time over the "
              f"timed loops {CPU_CHECK['process'] / max(CPU_CHECK['thread'], 1e-9):.3f}), the bandwidths count the "
              "thread's CPU time only."]
    given = sys.argv[1:] if argv is None else list(argv)      # the command as run (minus --out)
    kept, skip = [], False
    for x in given:
        if skip or x == "--out" or x.startswith("--out="):
            skip = x == "--out"
            continue
        kept.append(x)
    flags = "".join(f" {shlex.quote(x)}" for x in kept)
    lines += ["", f"Command: `nice .venv/bin/python -m benchmarks.bench_batch1{flags}` "
              f"({wall / 60:.1f} min)."]
    text = "\n".join(lines)
    print()
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1, default=float) + "\n")
    plot(rows, out.with_suffix(".png"))
    print(f"\nwrote {out.with_suffix('.md')}, {out.with_suffix('.json')}, {out.with_suffix('.png')}")


def shutil_rm(d: Path):
    import shutil
    for p in d.iterdir():
        shutil.rmtree(p, ignore_errors=True)


if __name__ == "__main__":
    main()
