"""Foundation: model, checkpoint loaders, tracing into the IR, interpreter parity, CLI errors."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from conftest import make_model
from egru_compile.cli import main
from egru_compile.frontend import (CheckpointError, FrontendError, export_step, load_source, save_checkpoint,
                                   trace_model)
from egru_compile.ir import Graph, Interpreter, TensorType, VerificationError, verify
from egru_compile.model import EGRUConfig, EGRULanguageModel


def _torch_vs_ir(model, steps=200, seed=1):
    graph = trace_model(model)
    it = Interpreter(graph)
    state = model.init_state(1)
    rng = np.random.default_rng(seed)
    worst = 0.0
    with torch.no_grad():
        for _ in range(steps):
            tok = int(rng.integers(model.config.vocab_size))
            logits, state = model.step(torch.tensor([tok]), state)
            ir_logits = it.step(tok)
            flat = [t.numpy() for pair in state for t in pair]
            worst = max(worst, float(np.abs(logits.numpy() - ir_logits).max()),
                        *(float(np.abs(a - b).max()) for a, b in zip(flat, it.state)))
    return worst, graph


@pytest.mark.parametrize("hidden,emb", [((16,), 16), ((24, 10), 10), ((20, 30, 12), 12)])
@pytest.mark.parametrize("sparsity", [0.0, 0.7])
def test_interpreter_matches_torch_step(hidden, emb, sparsity):
    model = make_model(vocab=37, emb=emb, hidden=hidden, sparsity=sparsity, seed=len(hidden))
    worst, graph = _torch_vs_ir(model)
    assert worst <= 1e-5
    assert graph.num_layers() == len(hidden)
    assert graph.layer_sizes() == list(hidden)


def test_sequence_forward_equals_step_loop():
    model = make_model(hidden=(12, 8), sparsity=0.5)
    toks = torch.randint(0, 40, (30, 1))
    with torch.no_grad():
        logits, _ = model(toks)
        state = model.init_state(1)
        for t in range(30):
            lt, state = model.step(toks[t], state)
            assert torch.allclose(lt, logits[t], atol=1e-6, rtol=0)


def test_surrogate_gradient_matches_evnn_formula():
    from egru_compile.model import SpikeFunction
    v = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.5], requires_grad=True)
    out = SpikeFunction.apply(v, 0.7, 1.0)
    out.sum().backward()
    assert out.tolist() == [0, 0, 0, 1, 1]
    expected = 0.7 * torch.clamp(1 - v.detach().abs(), min=0)
    assert torch.allclose(v.grad, expected)


def test_project_checkpoint_roundtrip_keeps_masks(tmp_path):
    model = make_model(sparsity=0.6)
    save_checkpoint(tmp_path / "m.pt", model, [f"w{i}" for i in range(40)], {"note": "x"})
    src = load_source(tmp_path / "m.pt")
    assert src.kind == "egru-checkpoint" and len(src.vocab) == 40 and src.meta == {"note": "x"}
    assert hasattr(src.model.rnns[0], "kernel_mask")
    assert torch.equal(src.model.rnns[0].kernel, model.rnns[0].kernel)
    worst, graph = _torch_vs_ir(src.model, steps=20)
    assert worst <= 1e-5
    assert any(n.is_const and n.attrs.get("label") == "rnns.0.kernel_mask" for n in graph.nodes)


def _evnn_state_dict(model):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["rnns.0.dampening_factor"] = torch.tensor(0.7)       # EvNN buffers we ignore
    return sd


def test_evnn_state_dict_matches_hand_computed_step(tmp_path):
    model = make_model(vocab=6, emb=4, hidden=(5, 4), seed=3)
    torch.save(_evnn_state_dict(model), tmp_path / "evnn.pt")
    train = tmp_path / "train.txt"
    train.write_text("a b c\nd e\n")                        # 5 words + <eos> = 6
    src = load_source(tmp_path / "evnn.pt", vocab_file=train)
    assert src.kind == "evnn-state-dict"
    assert src.vocab.words == ["a", "b", "c", "<eos>", "d", "e"]
    sd = {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}

    def sig(x):
        return 1 / (1 + np.exp(-x))

    x = sd["embeddings.weight"][2][None]
    ys = []
    for l, h in enumerate((5, 4)):
        W, R = sd[f"rnns.{l}.kernel"], sd[f"rnns.{l}.recurrent_kernel"]
        b, br, thr = sd[f"rnns.{l}.bias"], sd[f"rnns.{l}.recurrent_bias"], np.clip(sd[f"rnns.{l}.thr"], 0, 1)
        c = np.full((1, h), 0.3)
        y = np.zeros((1, h))
        gx, gh = x @ W + b, y @ R + br
        z = sig(gx[:, :h] + gh[:, :h])
        r = sig(gx[:, h:2 * h] + gh[:, h:2 * h])
        g = np.tanh(gx[:, 2 * h:] + r * gh[:, 2 * h:])
        ct = z * c + (1 - z) * g
        o = (ct > thr).astype(float)
        x = o * ct
        ys.append((ct - o * thr, x))
    logits = x @ sd["decoder.decoder.weight"].T + sd["decoder.decoder.bias"]
    graph = src.to_graph()
    from egru_compile.ir import run_graph
    state = []
    for h in (5, 4):
        state += [np.full((1, h), 0.3, np.float32), np.zeros((1, h), np.float32)]
    outs = run_graph(graph, [np.array([2])] + state)
    assert np.abs(outs[0] - logits).max() < 1e-5
    for (c, y), (ci, yi) in zip(ys, zip(outs[1::2], outs[2::2])):
        assert np.abs(ci - c).max() < 1e-5 and np.abs(yi - y).max() < 1e-5


def test_evnn_state_dict_vocab_size_mismatch(tmp_path):
    model = make_model(vocab=6, emb=4, hidden=(4,))
    torch.save(_evnn_state_dict(model), tmp_path / "evnn.pt")
    (tmp_path / "train.txt").write_text("a b\n")
    with pytest.raises(CheckpointError, match="6 words"):
        load_source(tmp_path / "evnn.pt", vocab_file=tmp_path / "train.txt")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_malicious_pickle_is_refused_and_payload_does_not_run(tmp_path):
    marker = tmp_path / "marker"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _Payload(str(marker))}, f)
    torch.save({"x": _Payload(str(marker))}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        res = CliRunner().invoke(main, [str(tmp_path / name), "--print-ir"])
        assert res.exit_code != 0
        assert "--trust-checkpoint" in res.output and len(res.output.strip().splitlines()) == 1
        assert not marker.exists()


def test_pickled_module_loads_only_with_trust(tmp_path):
    model = make_model()
    torch.save(model, tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="pickled"):
        load_source(tmp_path / "module.pt")
    src = load_source(tmp_path / "module.pt", trust=True)
    assert src.kind == "pickled-module"


def test_truncated_checkpoint_gives_one_line_error(tmp_path):
    model = make_model()
    save_checkpoint(tmp_path / "m.pt", model, None)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    proc = subprocess.run([sys.executable, "-m", "egru_compile.cli", str(tmp_path / "t.pt"), "--print-ir"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "truncated or corrupt" in lines[0]


def test_exported_program_pt2_loads(tmp_path):
    model = make_model(hidden=(10, 8), sparsity=0.5)
    ep = export_step(model, [10, 8])
    torch.export.save(ep, tmp_path / "step.pt2")
    with pytest.raises(CheckpointError, match="torch.export program.*--trust-checkpoint"):
        load_source(tmp_path / "step.pt2")           # loading a .pt2 unpickles its members
    src = load_source(tmp_path / "step.pt2", trust=True)
    assert src.kind == "exported-program" and src.hidden_sizes == [10, 8]
    graph = src.to_graph()
    ref = trace_model(model)
    rng = np.random.default_rng(0)
    a, b = Interpreter(graph), Interpreter(ref)
    for _ in range(20):
        tok = int(rng.integers(40))
        assert np.abs(a.step(tok) - b.step(tok)).max() < 1e-6


class AltEGRU(nn.Module):
    """The same EGRU math written differently: separate per-gate weights in [out, in] layout, F.linear,
    torch.heaviside, torch.where-free reset. The frontend must trace it by ops, not names."""

    def __init__(self, vocab, emb, hidden):
        super().__init__()
        self.config = EGRUConfig(vocab, emb, [hidden, emb])
        self.table = nn.Parameter(torch.randn(vocab, emb) * 0.3)
        sizes = [(emb, hidden), (hidden, emb)]
        self.w = nn.ParameterList()
        for n_in, h in sizes:
            for _ in range(3):
                self.w.append(nn.Parameter(torch.randn(h, n_in) * 0.4))
                self.w.append(nn.Parameter(torch.randn(h, h) * 0.4))
        self.theta = nn.ParameterList(nn.Parameter(torch.rand(h) * 0.3) for _, h in sizes)
        self.out_bias = nn.Parameter(torch.zeros(vocab))

    def step(self, tokens, state):
        x = nn.functional.embedding(tokens, self.table)
        new = []
        for l, (c, y) in enumerate(state):
            wz, uz, wr, ur, wg, ug = (self.w[6 * l + i] for i in range(6))
            z = torch.sigmoid(nn.functional.linear(x, wz) + nn.functional.linear(y, uz))
            r = torch.sigmoid(nn.functional.linear(x, wr) + nn.functional.linear(y, ur))
            g = torch.tanh(nn.functional.linear(x, wg) + r * nn.functional.linear(y, ug))
            ct = z * c + (1 - z) * g
            spikes = torch.heaviside(ct - self.theta[l], torch.zeros(()))
            y = ct * spikes
            c = ct - spikes * self.theta[l]
            new.append((c, y))
            x = y
        return nn.functional.linear(x, self.table, self.out_bias), new


def test_differently_written_egru_traces_by_ops():
    torch.manual_seed(0)
    m = AltEGRU(30, 6, 9)
    graph = trace_model(m, [9, 6])
    ops = {n.op for n in graph.nodes}
    assert {"linear", "sigmoid", "tanh", "heaviside"} <= ops
    it = Interpreter(graph)
    state = [(torch.zeros(1, 9), torch.zeros(1, 9)), (torch.zeros(1, 6), torch.zeros(1, 6))]
    with torch.no_grad():
        for tok in [1, 5, 7, 2, 2, 9, 0, 29]:
            logits, state = m.step(torch.tensor([tok]), state)
            assert np.abs(it.step(tok) - logits.numpy()).max() < 1e-5


class SinRNN(EGRULanguageModel):        # (relu is supported since the projection decoder; sin is not)
    def step(self, tokens, state):
        x = torch.sin(self.embeddings(tokens))
        return super().step(tokens, state)[0] + x.sum(), state


def test_unsupported_op_names_op_and_location():
    m = SinRNN(EGRUConfig(20, 4, [4]))
    with pytest.raises(FrontendError, match=r"unsupported op aten\.sin\.default at module '<top>' \(File .*line \d+"):
        trace_model(m)


def test_verifier_catches_broken_graphs():
    g = Graph()
    t = g.add_input("tokens", TensorType((1,), "i64"), role="tokens")
    table = g.const(np.zeros((5, 3), np.float32), name="table")
    e = g.op("embedding", table, t)
    s = g.op("sigmoid", e)
    g.outputs = [s]
    verify(g)
    # unused value
    g.op("tanh", e)
    with pytest.raises(VerificationError, match="never used"):
        verify(g)
    g.nodes.pop()
    # use before definition (cycle / ordering)
    g.nodes.reverse()
    with pytest.raises(VerificationError, match="before it is defined"):
        verify(g)
    g.nodes.reverse()
    # type mismatch
    s.type = TensorType((1, 4))
    with pytest.raises(VerificationError, match="op rule gives"):
        verify(g)


def test_printer_is_deterministic_and_networkx_view():
    a = str(trace_model(make_model(sparsity=0.5)))
    b = str(trace_model(make_model(sparsity=0.5)))
    assert a == b
    g = trace_model(make_model())
    nxg = g.to_networkx()
    import networkx as nx
    assert nx.is_directed_acyclic_graph(nxg)
    assert nxg.number_of_nodes() == len(g.nodes)


def test_print_ir_shows_three_layers(tmp_path):
    model = make_model(emb=8, hidden=(16, 12, 8), sparsity=0.5)
    save_checkpoint(tmp_path / "m.pt", model, None)
    res = CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--print-ir"])
    assert res.exit_code == 0, res.output
    text = res.output
    for l in range(3):
        lines = [ln for ln in text.splitlines() if f"loc(rnns.{l})" in ln]
        body = "\n".join(lines)
        assert body.count("matmul(") == 2          # input and recurrent matrices
        for op in ("sigmoid(", "tanh(", "heaviside(", "clamp(", "sub("):
            assert op in body, (l, op)
    assert "state_in l2 y" in text and "state_out l2 c" in text


def test_cli_unknown_target_and_missing_file(tmp_path):
    model = make_model()
    save_checkpoint(tmp_path / "m.pt", model, None)
    res = CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--target", "fpga"])
    assert res.exit_code != 0 and "unknown target 'fpga'" in res.output
    res = CliRunner().invoke(main, [str(tmp_path / "nope.pt"), "--print-ir"])
    assert res.exit_code != 0 and "no such file" in res.output


def test_console_script_headline_form(tmp_path):
    """`egru-compile model.pt --target X` parses as written (no subcommand needed)."""
    model = make_model()
    save_checkpoint(tmp_path / "model.pt", model, None)
    res = CliRunner().invoke(main, [str(tmp_path / "model.pt"), "--print-ir"])
    assert res.exit_code == 0 and res.output.startswith("// egru-ir v1\ngraph @step(")


def test_evnn_state_dict_compiled_without_vocab_warns_once(tmp_path):
    """An EvNN state_dict holds no vocabulary: compiling one without --vocab warns (one line naming --vocab);
    with it, no warning and the artifact reads text."""
    from click.testing import CliRunner

    from egru_compile.cli import main
    model = make_model(vocab=6, emb=4, hidden=(5, 4), seed=3)
    torch.save(_evnn_state_dict(model), tmp_path / "evnn.pt")
    import warnings
    with pytest.warns(UserWarning) as got:
        res = CliRunner().invoke(main, [str(tmp_path / "evnn.pt"), "--target", "onnx", "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    warned = [str(w.message) for w in got if "vocabulary" in str(w.message)]
    assert len(warned) == 1 and "no --vocab TRAIN.txt" in warned[0], warned
    (tmp_path / "train.txt").write_text("a b c\nd e\n")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        res = CliRunner().invoke(main, [str(tmp_path / "evnn.pt"), "--vocab", str(tmp_path / "train.txt"),
                                        "--target", "onnx", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert not [w for w in got if "vocabulary" in str(w.message)]
