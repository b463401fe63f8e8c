"""EvNN's two language-model configurations compile for every target: the tied decoder (last layer = embedding
size) and the projection decoder ``logits = E · a(P · y_last + p) + b`` (every layer any size), with both
projection activations: a = identity (EvNN >= 0.2.0, the default for EvNN state_dicts) and a = relu (EvNN's
March-2023 code, ``--projection-activation relu``).

The reference is written here, in numpy, from EvNN's equations (not the project's model class), on a
state_dict laid out as EvNN saves it — including its training-only buffers (``rnns.{l}.dampening_factor``,
``rnns.{l}.pseudo_derivative_support``) and the tied ``decoder.decoder.weight``. Every target (onnx, tvm when
importable, loihi-like with --float-weights) must match its perplexity within 0.1 % and its MACs/token exactly
(convention: RNN layers only; an active input unit's column costs its non-zero fan-out; the embedding input
counts fully active); the projection's own MACs are reported on the decoder side.
"""
from __future__ import annotations

import json
from pathlib import Path
import math
import re
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from egru_compile.cli import main
from egru_compile.data import Vocabulary
from egru_compile.runtime import open_artifact
from egru_compile.runtime.evaluate import evaluate

WORDS = [f"w{i}" for i in range(59)]
V, E = 60, 16


def evnn_state_dict(hidden, projection: bool, seed: int = 0, sparsity: float = 0.6, masked: bool = False):
    """A random, pruned state_dict with EvNN's LanguageModel keys (``masked``: the projection weight as
    ``torch.nn.utils.prune`` stores it, ``_orig`` + ``_mask``)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, keep=1.0):
        w = torch.randn(*shape, generator=g) * scale
        if keep < 1.0:
            w = w * (torch.rand(*shape, generator=g) < keep)
        return w

    emb = torch.rand(V, E, generator=g) * 0.6 - 0.3
    sd = {"embeddings.weight": emb}
    prev = E
    for l, h in enumerate(hidden):
        sd[f"rnns.{l}.kernel"] = rnd(prev, 3 * h, scale=0.6, keep=1 - sparsity)
        sd[f"rnns.{l}.recurrent_kernel"] = rnd(h, 3 * h, scale=0.6, keep=1 - sparsity)
        sd[f"rnns.{l}.bias"] = rnd(3 * h, scale=0.3)
        sd[f"rnns.{l}.recurrent_bias"] = rnd(3 * h, scale=0.3)
        sd[f"rnns.{l}.thr"] = torch.rand(h, generator=g) * 0.3 + 0.02
        sd[f"rnns.{l}.dampening_factor"] = torch.tensor(0.7)           # EvNN training-only buffers
        sd[f"rnns.{l}.pseudo_derivative_support"] = torch.tensor(1.0)
        prev = h
    if projection:
        P = rnd(E, prev, scale=0.8)
        mask = (torch.rand(E, prev, generator=g) < 0.5).float()
        if masked:
            sd["decoder.projection.weight_orig"] = P
            sd["decoder.projection.weight_mask"] = mask
        else:
            sd["decoder.projection.weight"] = P * mask
        sd["decoder.projection.bias"] = rnd(E, scale=0.2)
    sd["decoder.decoder.weight"] = emb                                      # tied to the embedding
    sd["decoder.decoder.bias"] = rnd(V, scale=0.1)
    return sd


def _np(sd, k):
    return sd[k].detach().numpy().astype(np.float64)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(sd, hidden, ids, activation="identity", bptt=None):
    """EvNN's equations step by step: (perplexity, RNN MACs/token, projection MACs/token or None);
    `activation` of the projection: identity (EvNN 0.2.0's ``nn.Linear``) or relu (its 2023 code); `bptt`:
    EvNN's chunked evaluation (every `bptt` predictions each layer's c restarts from 0, its y is kept)."""
    emb = _np(sd, "embeddings.weight")
    P = None
    if any(k.startswith("decoder.projection.weight") for k in sd):
        P = _np(sd, "decoder.projection.weight") if "decoder.projection.weight" in sd else \
            _np(sd, "decoder.projection.weight_orig") * _np(sd, "decoder.projection.weight_mask")
        p = _np(sd, "decoder.projection.bias")
    D, d = _np(sd, "decoder.decoder.weight"), _np(sd, "decoder.decoder.bias")
    lay = [dict(W=_np(sd, f"rnns.{l}.kernel"), R=_np(sd, f"rnns.{l}.recurrent_kernel"), b=_np(sd, f"rnns.{l}.bias"),
                br=_np(sd, f"rnns.{l}.recurrent_bias"), thr=np.clip(_np(sd, f"rnns.{l}.thr"), 0, 1))
           for l in range(len(hidden))]
    c = [np.zeros(h) for h in hidden]
    y = [np.zeros(h) for h in hidden]
    nll = macs = pmacs = 0.0
    for t in range(len(ids) - 1):
        if bptt and t and t % bptt == 0:
            c = [np.zeros(h) for h in hidden]
        x = emb[ids[t]]
        x_dense = True
        for l, (L, h) in enumerate(zip(lay, hidden)):
            W, R = L["W"], L["R"]
            # MACs: an active input unit's row of W (its column of the math matrix) costs its non-zero fan-out
            macs += np.count_nonzero(W) if x_dense else np.count_nonzero(W[x != 0])
            macs += np.count_nonzero(R[y[l] != 0])
            gx = x @ W + L["b"]
            gh = y[l] @ R + L["br"]
            z = sigmoid(gx[:h] + gh[:h])
            r = sigmoid(gx[h:2 * h] + gh[h:2 * h])
            gg = np.tanh(gx[2 * h:] + r * gh[2 * h:])
            ct = z * c[l] + (1 - z) * gg
            o = (ct - L["thr"] > 0).astype(np.float64)
            y[l] = o * ct
            c[l] = ct - o * L["thr"]
            x, x_dense = y[l], False
        if P is not None:
            pmacs += np.count_nonzero(P[:, x != 0])
            x = P @ x + p
            if activation == "relu":
                x = np.maximum(x, 0.0)
        logits = D @ x + d
        m = logits.max()
        nll += m + math.log(np.exp(logits - m).sum()) - logits[ids[t + 1]]
    T = len(ids) - 1
    return math.exp(nll / T), macs / T, (pmacs / T if P is not None else None)


#: name -> (hidden sizes, projection activation or None for the tied decoder)
CONFIGS = {"projection": ([32, 24], "identity"), "projection-relu": ([32, 24], "relu"), "tied": ([32, E], None)}


_ACT: dict = {}          # fixture directory -> its projection activation


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def evnn(request, tmp_path_factory):
    name = request.param
    hidden, act = CONFIGS[name]
    projection = act is not None
    d = tmp_path_factory.mktemp(f"evnn_{name}")
    sd = evnn_state_dict(hidden, projection, masked=projection)
    torch.save(sd, d / "evnn.pt")
    rng = np.random.default_rng(1)
    (d / "train.txt").write_text(" ".join(WORDS) + "\n")
    (d / "test.txt").write_text("\n".join(" ".join(rng.choice(WORDS, 12)) for _ in range(25)) + "\n")
    ids = Vocabulary.from_train_file(d / "train.txt").encode_file(d / "test.txt")
    _ACT[d] = act
    return d, sd, hidden, ids, reference(sd, hidden, ids, act or "identity")


def _act_flag(d):
    """relu is asked for; identity is the EvNN default (no flag: the compiler says so in one line)."""
    return ["--projection-activation", "relu"] if _ACT[d] == "relu" else []


def _compile(d, target, *extra):
    out = d / f"out_{target}{''.join(extra).replace('-', '_')}"
    with warnings.catch_warnings(record=True) as seen:          # the CLI prints them as "warning: ..." lines
        res = CliRunner().invoke(main, [str(d / "evnn.pt"), "--vocab", str(d / "train.txt"), "--target", target,
                                        "-o", str(out), "--force", "--calib-data", str(d / "test.txt"),
                                        "--report", str(d / f"macs_{target}.json"), *_act_flag(d), *extra])
    assert res.exit_code == 0, res.output
    notice = [str(w.message) for w in seen if "--projection-activation relu" in str(w.message)]
    assert len(notice) == (1 if _ACT[d] == "identity" else 0), notice   # the default is named, once
    if _ACT[d]:
        assert f"activation {_ACT[d]}" in res.output
    return out, json.loads((d / f"macs_{target}.json").read_text())


def _check(out, ids, ref):
    ppl, macs, _ = ref
    r = evaluate(open_artifact(out), ids, quiet=True)
    assert abs(r["perplexity"] / ppl - 1) < 1e-3, (r["perplexity"], ppl)
    assert r["macs_per_token"] * r["tokens"] == pytest.approx(macs * r["tokens"], abs=1e-6)
    return r


def test_reference_is_not_trivial(evnn):
    _, sd, hidden, ids, (ppl, macs, pmacs) = evnn
    assert 1 < ppl < 10 * V and macs > 0
    dense = sum((i + h) * 3 * h for i, h in zip([E] + hidden[:-1], hidden))
    assert macs < 0.9 * dense                      # pruning and activity both show in the count
    assert (pmacs is not None) == any(k.startswith("decoder.projection") for k in sd)
    if pmacs is not None:
        assert 0 < pmacs < E * hidden[-1]


def test_source_and_onnx_match_reference(evnn):
    d, sd, hidden, ids, ref = evnn
    r = evaluate(open_artifact(d / "evnn.pt", vocab_file=d / "train.txt", projection_activation=_ACT[d]), ids,
                 quiet=True)
    assert abs(r["perplexity"] / ref[0] - 1) < 1e-3 and r["macs_per_token"] == pytest.approx(ref[1], abs=1e-9)
    out, rep = _compile(d, "onnx")
    _check(out, ids, ref)
    man = json.loads((out / "manifest.json").read_text())
    assert man["projection"] == rep.get("projection")                 # the MAC report's decoder-side entry
    assert man["projection_activation"] == _ACT[d]
    text = CliRunner().invoke(main, ["inspect", str(out)]).output       # one projection line, no raw dict
    proj = [ln for ln in text.splitlines() if ln.startswith("projection ")]
    assert (len(proj) == 1 and "{" not in proj[0]) if _ACT[d] else not proj, proj
    # the projection is event-gated; with relu the decoder skips relu's zeros, with identity its input is
    # graded and signed, so the decoder is the one dense product
    assert man["lowering"]["dense_matvecs"] == (1 if _ACT[d] == "identity" else 0)
    shown = CliRunner().invoke(main, ["inspect", str(out)]).output
    assert ("projection" in shown) == (ref[2] is not None)
    assert (f"activation {_ACT[d]}" in shown) == (_ACT[d] is not None)
    if _ACT[d]:
        other = "identity" if _ACT[d] == "relu" else "relu"       # an artifact's activation is compiled in
        res = CliRunner().invoke(main, ["eval", str(out), "--data", str(d / "test.txt"), "--projection-activation",
                                        other])
        assert res.exit_code == 1 and res.output.startswith("error: ") and "recompile" in res.output
    # count-macs on the calibration text: RNN total = the reference; the projection on the decoder side
    assert rep["calib_tokens"] == len(ids)
    T = len(ids) - 1
    ref_all = reference(sd, hidden, np.append(ids, ids[0]))          # count-macs counts every calib token
    assert rep["macs_per_token"]["dynamic"] * len(ids) == pytest.approx(ref_all[1] * len(ids), abs=1e-6)
    if ref[2] is None:
        assert "projection" not in rep
        assert rep["decoder_macs_per_token"] == V * E
    else:
        pj = rep["projection"]
        P = _np(sd, "decoder.projection.weight_orig") * _np(sd, "decoder.projection.weight_mask")
        nnz = int(np.count_nonzero(P))
        assert pj["nnz"] == pj["static"] == nnz and pj["shape"] == [E, hidden[-1]]   # prune mask folded
        assert pj["activation"] == _ACT[d]
        assert pj["dynamic"] * len(ids) == pytest.approx(ref_all[2] * len(ids), abs=1e-6)
        assert rep["decoder_macs_per_token"] == V * E + nnz
        assert [m["role"] for m in rep["matrices"]].count("projection") == 1
        assert sum(l["input_static"] + l["recurrent_static"] for l in rep["layers"]) == \
            rep["macs_per_token"]["static"]                          # not in the RNN-layer total
    assert T > 100


def test_tvm_matches_reference(evnn):
    pytest.importorskip("tvm")
    d, _, _, ids, ref = evnn
    out, _ = _compile(d, "tvm")
    _check(out, ids, ref)


def test_loihi_like_matches_reference(evnn):
    d, sd, hidden, ids, ref = evnn
    out, _ = _compile(d, "loihi-like", "--float-weights")
    r = _check(out, ids, ref)
    host = r["chip"]["host"]
    m = json.loads((out / "mapping.json").read_text())
    if ref[2] is None:
        assert "projection_macs" not in host
    else:
        assert host["projection_macs"] == pytest.approx(ref[2], abs=1e-9)       # event-gated, on the host
        assert host["projection_activation"] == _ACT[d] and m["decoder"]["host"]["projection_activation"] == _ACT[d]
        assert m["decoder"]["host"]["projection_macs_static"] == host["projection_macs_static"]
        res = CliRunner().invoke(main, [str(d / "evnn.pt"), "--vocab", str(d / "train.txt"), "--target",
                                        "loihi-like", "--float-weights", "--decoder", "chip", "-o",
                                        str(d / "chipdec"), "--force", *_act_flag(d)])
        assert res.exit_code == 1 and "error: --decoder chip" in res.output and "projection" in res.output


# ------------------------------------------------------------------------------------------------ frontends
def _projection_model(seed=3, activation="identity"):
    from torch.nn.utils import prune

    from egru_compile.model import EGRUConfig, EGRULanguageModel
    torch.manual_seed(seed)
    m = EGRULanguageModel(EGRUConfig(V, E, [20, 12], projection=True, projection_activation=activation))
    with torch.no_grad():
        for layer in m.rnns:
            layer.thr.uniform_(0.02, 0.2)
            layer.bias.normal_(0, 0.3)
    prune.l1_unstructured(m.decoder.projection, "weight", amount=0.6)          # a prune mask on P
    for layer in m.rnns:
        prune.l1_unstructured(layer, "recurrent_kernel", amount=0.5)
    return m.eval()


def _torch_macs(model, ids):
    """Reference MACs from the model's own weights (same convention as `reference`)."""
    with torch.no_grad():
        Ws = [(l.kernel.numpy(), l.recurrent_kernel.numpy()) for l in model.rnns]
        P = model.decoder.projection.weight.numpy()
        state = model.init_state(1)
        macs = pm = 0
        for t in ids[:-1]:
            prev = [y.numpy().reshape(-1) for _, y in state]
            _, state = model.step(torch.tensor([int(t)]), state)
            ys = [y.numpy().reshape(-1) for _, y in state]
            for l, (W, R) in enumerate(Ws):
                macs += np.count_nonzero(W) if l == 0 else np.count_nonzero(W[ys[l - 1] != 0])
                macs += np.count_nonzero(R[prev[l] != 0])
            pm += np.count_nonzero(P[:, ys[-1] != 0])
    return macs, pm


@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_project_checkpoint_and_export_with_projection(tmp_path, activation):
    from egru_compile.frontend import export_step, save_checkpoint
    from egru_compile.frontend.trace import trace_model
    from egru_compile.ir.parser import parse_ir
    from egru_compile.ir.printer import print_graph, resource_arrays
    from egru_compile.passes import MacReport, PassManager, PassOptions
    from egru_compile.passes.testing import max_abs_diff
    model = _projection_model(activation=activation)
    words = WORDS + ["<eos>"]
    save_checkpoint(tmp_path / "m.pt", model, words)
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    sd = ck["state_dict"]
    assert "decoder.projection.weight_mask" in sd and "decoder.projection.weight_orig" in sd
    assert ck["config"]["projection_activation"] == activation            # recorded in the checkpoint
    ids = np.random.default_rng(4).integers(0, V, 60)
    g = trace_model(model)
    assert [n.op for n in g.nodes].count("relu") == (activation == "relu")
    opt = PassManager("default", PassOptions(calib_tokens=ids)).run(g)
    proj = [n for n in opt.nodes if n.op == "event_matvec" and n.attrs.get("role") == "projection"]
    assert len(proj) == 1                                       # event-gated like any other product
    mask = sd["decoder.projection.weight_mask"].numpy()
    assert proj[0].inputs[3].producer.attrs["nnz"] == int(mask.sum())          # the prune mask folded
    rep = opt.analyses.get(MacReport)
    macs, pm = _torch_macs(model, np.append(ids, 0))
    assert rep.macs_per_token.dynamic * len(ids) == pytest.approx(macs, abs=1e-6)
    assert rep.projection.dynamic * len(ids) == pytest.approx(pm, abs=1e-6)
    assert max_abs_diff(g, opt, steps=30) <= 1e-5
    # the IR text of the projection graph parses back
    text = print_graph(opt, words)
    assert ("relu(" in text) == (activation == "relu") and 'role="projection"' in text
    assert print_graph(parse_ir(text, resource_arrays(opt, words)).graph, words) == text
    # a torch.export program of the same step compiles to the same logits
    torch.export.save(export_step(model, [20, 12]), tmp_path / "step.pt2")
    (tmp_path / "train.txt").write_text(" ".join(WORDS) + "\n")
    (tmp_path / "test.txt").write_text(" ".join(np.array(WORDS)[ids[:40] % 59]) + "\n")
    test_ids = Vocabulary.from_train_file(tmp_path / "train.txt").encode_file(tmp_path / "test.txt")
    want = evaluate(open_artifact(tmp_path / "m.pt"), test_ids, quiet=True)
    for src, extra in (("m.pt", []), ("step.pt2", ["--trust-checkpoint", "--vocab", str(tmp_path / "train.txt")])):
        out = tmp_path / f"onnx_{src}"
        res = CliRunner().invoke(main, [str(tmp_path / src), "--target", "onnx", "-o", str(out), *extra])
        assert res.exit_code == 0, res.output
        r = evaluate(open_artifact(out), test_ids, quiet=True)
        assert abs(r["perplexity"] / want["perplexity"] - 1) < 1e-5 and r["macs_per_token"] == want["macs_per_token"]
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "m.pt")])
    assert res.exit_code == 0 and f"density {mask.mean():.4f}" in res.output
    assert ("relu(P · y + p)" in res.output) == (activation == "relu") and f"activation {activation}" in res.output


def test_train_projection_flag(tmp_path):
    rng = np.random.default_rng(2)
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text((" ".join(WORDS) + "\n") * (split == "train") +
                                              "\n".join(" ".join(rng.choice(WORDS, 10)) for _ in range(30)) + "\n")
    args = ["train", "--data-dir", str(tmp_path), "--emb", "8", "--hidden", "12,10", "--epochs", "1", "--batch-size",
            "2", "--bptt", "8", "--max-steps", "3", "--no-progress", "-o", str(tmp_path / "m.pt")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and "--projection" in res.output        # the tied-size rule names the way out
    for act in ("identity", "relu"):
        out = tmp_path / "out" / f"m_{act}.pt"
        res = CliRunner().invoke(main, args[:-1] + [str(out), "--projection", "--projection-activation", act])
        assert res.exit_code == 0, res.output
        ck = torch.load(out, weights_only=True)
        assert ck["config"]["projection"] is True and ck["config"]["projection_activation"] == act
        assert tuple(ck["state_dict"]["decoder.projection.weight"].shape) == (8, 10)
        shown = CliRunner().invoke(main, ["inspect", str(out)]).output
        assert f"activation {act}" in shown


@pytest.mark.parametrize("break_it, message", [
    (lambda sd: sd.update({"decoder.projection.weight": torch.zeros(E, 7)}),
     r"decoder\.projection\.weight has shape \(16, 7\), expected \(16, 24\)"),
    (lambda sd: sd.pop("decoder.projection.bias"), r"has decoder\.projection\.weight but no decoder\.projection\.bias"),
    (lambda sd: sd.pop("decoder.projection.weight"), r"last layer size 24 must equal embedding size 16"),
])
def test_malformed_projection_state_dicts_are_one_line_errors(tmp_path, break_it, message):
    sd = evnn_state_dict([32, 24], True)
    break_it(sd)
    torch.save(sd, tmp_path / "bad.pt")
    (tmp_path / "train.txt").write_text(" ".join(WORDS) + "\n")
    res = CliRunner().invoke(main, [str(tmp_path / "bad.pt"), "--vocab", str(tmp_path / "train.txt"), "--target",
                                    "onnx", "-o", str(tmp_path / "out")])
    assert res.exit_code == 1 and res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1
    assert re.search(message, res.output), res.output


def test_chunked_protocol_matches_reference(evnn):
    """``eval --chunked BPTT`` (EvNN's eval.py): source, onnx and the IR interpreter against the reference with
    c restarting from zero every BPTT predictions (y kept); the streaming protocol differs from it."""
    from egru_compile.runtime.torch_runner import GraphRunner
    d, sd, hidden, ids, ref = evnn
    act = _ACT[d] or "identity"
    want = reference(sd, hidden, ids, act, bptt=7)
    assert abs(want[0] / ref[0] - 1) > 1e-4                       # the protocols really differ here
    out = d / "out_onnx"                       # compiled by the onnx test (with this fixture's activation)
    if not out.is_dir():
        out, _ = _compile(d, "onnx")
    src = open_artifact(d / "evnn.pt", vocab_file=d / "train.txt", projection_activation=_ACT[d])
    from egru_compile.frontend import load_source
    graph = load_source(d / "evnn.pt", vocab_file=d / "train.txt", projection_activation=_ACT[d]).to_graph()
    for runner in (src, open_artifact(out), GraphRunner(graph)):
        r = evaluate(runner, ids, quiet=True, chunked=7)
        assert r["protocol"] == "evnn-chunked" and r["bptt"] == 7
        assert abs(r["perplexity"] / want[0] - 1) < 1e-3, (runner.target, r["perplexity"], want[0])
        assert r["macs_per_token"] * r["tokens"] == pytest.approx(want[1] * r["tokens"], abs=1e-6)
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(d / "test.txt"), "--chunked", "7",
                                    "--batch-size", "2"])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "--batch-size 1" in res.output


def test_projection_activation_sources(tmp_path):
    """A project checkpoint written before the activation was recorded reads as relu (what egru-compile then
    computed); an explicit flag overrides a recorded value (one warning); a graph source refuses the flag."""
    from egru_compile.frontend import export_step, load_source, save_checkpoint
    model = _projection_model(activation="relu")
    save_checkpoint(tmp_path / "m.pt", model, WORDS + ["<eos>"])
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    del ck["config"]["projection_activation"]
    torch.save(ck, tmp_path / "old.pt")
    assert load_source(tmp_path / "old.pt").projection_activation == "relu"
    with pytest.warns(UserWarning, match="records relu"):
        assert load_source(tmp_path / "m.pt", projection_activation="identity").projection_activation == "identity"
    torch.export.save(export_step(model, [20, 12]), tmp_path / "step.pt2")
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "step.pt2"), "--trust-checkpoint",
                                    "--projection-activation", "relu"])
    assert res.exit_code == 1 and res.output.startswith("error: ") and "state_dicts only" in res.output
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "m.pt"), "--projection-activation", "tanh"])
    assert res.exit_code == 2 and res.output.startswith("error: ")


def test_projection_activation_for_a_model_without_projection_is_refused(tmp_path):
    """--projection-activation names the activation of a decoder projection: given for a model that has none
    (checkpoint or compiled artifact) it is a one-line error, not silently ignored."""
    from click.testing import CliRunner
    from egru_compile.cli import main
    ckpt = Path(__file__).resolve().parents[2] / "examples" / "ptb-egru-small" / "model.pt"
    r = CliRunner().invoke(main, [str(ckpt), "--target", "onnx", "-o", str(tmp_path / "o"),
                                  "--projection-activation", "relu"])
    assert r.exit_code == 1 and "no decoder projection" in r.output and not (tmp_path / "o").exists(), r.output
    assert CliRunner().invoke(main, [str(ckpt), "--target", "onnx", "-o", str(tmp_path / "o")]).exit_code == 0
    (tmp_path / "t.txt").write_text("the company said\n")
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "o"), "--data", str(tmp_path / "t.txt"),
                                  "--projection-activation", "identity"])
    assert r.exit_code == 1 and "no decoder projection" in r.output, r.output
