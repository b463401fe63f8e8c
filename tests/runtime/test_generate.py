"""`egru-compile generate`: the f32 targets (PyTorch source, onnx f32, tvm, a chip simulated with float
weights) print the same text as an independent reference (PyTorch `model.step` + a sampler written here),
greedy and sampled; bad prompts fail with one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_model
from egru_compile.cli import main
from egru_compile.frontend import save_checkpoint

WORDS = [f"w{i}" for i in range(47)] + ["<eos>"]
PROMPT = "w3 w17 w40 <eos> w5"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    model = make_model(vocab=48, emb=16, hidden=(40, 16), sparsity=0.8, seed=2, thr=(0.05, 0.3))
    save_checkpoint(d / "m.pt", model, WORDS)
    arts = {"torch": d / "m.pt"}
    targets = ["onnx"]
    try:
        import tvm  # noqa: F401
        targets.append("tvm")
    except ImportError:
        pass
    targets.append("loihi-like")                 # --float-weights: the chip simulator with f32 weights
    for t in targets:
        extra = ["--float-weights"] if t == "loihi-like" else []
        res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", t, "-o", str(d / t), *extra])
        assert res.exit_code == 0, res.output
        arts[t] = d / t
    return model, arts


def reference(model, prompt_ids, n, temperature, top_k, seed):
    """Generation with the PyTorch model directly: float64 tempered softmax over the top-k logits, one uniform
    draw per token from numpy's default_rng(seed), inverse CDF in token-id order."""
    rng = np.random.default_rng(seed)
    state = model.init_state(1)
    out = []
    with torch.no_grad():
        for t in prompt_ids:
            logits, state = model.step(torch.tensor([t]), state)
        for _ in range(n):
            z = logits[0].double()
            if temperature == 0:
                tok = int(torch.argmax(z))
            else:
                z = z / temperature
                if top_k:
                    keep = torch.topk(z, top_k).indices
                    mask = torch.full_like(z, float("-inf"))
                    mask[keep] = 0
                    z = z + mask
                p = torch.softmax(z, 0).numpy()
                u = rng.random()
                cdf = np.cumsum(p) / p.sum()
                tok = int(np.argmax(cdf > u))
            out.append(tok)
            logits, state = model.step(torch.tensor([tok]), state)
    return out


def _text(ids):
    words = [WORDS[i] for i in ids]
    return " ".join(words).replace(" <eos> ", "\n").replace(" <eos>", "").replace("<eos> ", "\n")


@pytest.mark.parametrize("temperature,top_k,seed", [(0, 0, 0), (1.0, 0, 7), (0.8, 5, 3)])
def test_f32_targets_print_the_same_text(artifacts, temperature, top_k, seed):
    model, arts = artifacts
    prompt_ids = [WORDS.index(w) for w in PROMPT.split()]
    want = reference(model, prompt_ids, 30, temperature, top_k, seed)
    texts = {}
    for name, art in arts.items():
        res = CliRunner().invoke(main, ["generate", str(art), "--prompt", PROMPT, "--tokens", "30",
                                        "--temperature", str(temperature), "--top-k", str(top_k),
                                        "--seed", str(seed), "--json"])
        assert res.exit_code == 0, (name, res.output)
        out = json.loads(res.output)
        assert out["tokens"] == want, name
        texts[name] = CliRunner().invoke(main, ["generate", str(art), "--prompt", PROMPT, "--tokens", "30",
                                                "--temperature", str(temperature), "--top-k", str(top_k),
                                                "--seed", str(seed)]).output
    assert len(set(texts.values())) == 1, texts
    assert texts["torch"].rstrip("\n") == _text(prompt_ids + want)
    assert {"torch", "onnx", "loihi-like"} <= set(arts)


def test_greedy_is_argmax_chain(artifacts):
    """temperature 0 ignores the seed."""
    _, arts = artifacts
    outs = {CliRunner().invoke(main, ["generate", str(arts["onnx"]), "--prompt", PROMPT, "--tokens", "12",
                                      "--temperature", "0", "--seed", str(s)]).output for s in (0, 1, 2)}
    assert len(outs) == 1


def test_bad_prompt_is_one_line(artifacts):
    model, arts = artifacts
    res = CliRunner().invoke(main, ["generate", str(arts["onnx"]), "--prompt", "w3 nope w4", "--tokens", "3"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == ["error: prompt word 'nope' is not in the vocabulary (use --unk TOKEN)"]
    res = CliRunner().invoke(main, ["generate", str(arts["onnx"]), "--prompt", "  ", "--tokens", "3"])
    assert res.exit_code == 1 and res.output.strip() == "error: the prompt has no words"
    # --unk maps the unknown word: same tokens as the prompt with that word replaced
    a = CliRunner().invoke(main, ["generate", str(arts["onnx"]), "--prompt", "w3 nope w4", "--unk", "w9",
                                  "--tokens", "5", "--temperature", "0", "--json"])
    b = CliRunner().invoke(main, ["generate", str(arts["onnx"]), "--prompt", "w3 w9 w4",
                                  "--tokens", "5", "--temperature", "0", "--json"])
    assert a.exit_code == 0 and json.loads(a.output)["tokens"] == json.loads(b.output)["tokens"]
    res = CliRunner().invoke(main, ["generate", str(arts["onnx"]), "--prompt", "w3", "--temperature", "-1"])
    assert res.exit_code == 2 and res.output.startswith("error:")
