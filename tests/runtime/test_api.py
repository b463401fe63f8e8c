"""The Python API (`egru_compile.compile / load / Artifact / EvalResult`), checked against independent
references: PyTorch recounts of perplexity and greedy generation, word counts from the text itself, and the
CLI's `eval --json` (the same figures through the command line)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import egru_compile as ec
from conftest import make_model
from egru_compile.frontend import save_checkpoint

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]
TEXT = "w1 w2 w3 w4\nw5 w6 w7 w8 w9 w10\n" * 20          # ~ 240 tokens


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    model = make_model(sparsity=0.6)
    save_checkpoint(d / "m.pt", model, WORDS)
    (d / "text.txt").write_text(TEXT)
    art = ec.compile(d / "m.pt", "onnx", d / "m.onnx")
    return d, model, art


def torch_nll(model, ids) -> tuple[float, int]:
    """Sum of next-token NLL by stepping the PyTorch model from a zero state (the reference)."""
    state = model.init_state(1)
    total = 0.0
    with torch.no_grad():
        for t in range(len(ids) - 1):
            logits, state = model.step(torch.tensor([int(ids[t])]), state)
            total -= float(torch.log_softmax(logits.reshape(-1).double(), 0)[int(ids[t + 1])])
    return total, len(ids) - 1


def corpus_ids(text: str, words: list[str]) -> list[int]:
    index = {w: i for i, w in enumerate(words)}
    return [index[w] for line in text.splitlines() for w in line.split() + ["<eos>"]]


def test_import_is_cheap():
    code = "import sys, egru_compile; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_compile_returns_artifact_that_evaluates_like_pytorch_and_the_cli(setup):
    d, model, art = setup
    assert isinstance(art, ec.Artifact) and art.kind == "artifact" and art.target == "onnx"
    assert art.summary and (d / "m.onnx" / "manifest.json").is_file()
    r = art.evaluate(d / "text.txt")
    assert isinstance(r, ec.EvalResult)
    nll, n = torch_nll(model, corpus_ids(TEXT, WORDS))
    assert r.tokens == n and r.perplexity == pytest.approx(math.exp(nll / n), rel=1e-4)
    assert r.words == len(TEXT.split()) and r.unknown_words == 0 and r.case_folded == 0 and r.chip is None
    from egru_compile.cli import main
    res = CliRunner().invoke(main, ["eval", str(d / "m.onnx"), "--data", str(d / "text.txt"), "--json"])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)
    for key in ("perplexity", "tokens", "macs_per_token", "activity", "events_per_token", "words", "unknown_words"):
        assert cli[key] == getattr(r, key), key
    # the text itself (a string) evaluates like the file holding it
    assert art.evaluate(TEXT).perplexity == r.perplexity


def test_load_checkpoint_and_max_tokens_batch(setup):
    d, model, _ = setup
    src = ec.load(d / "m.pt")
    assert src.kind == "checkpoint" and src.target == "torch"
    r = src.evaluate(str(d / "text.txt"), max_tokens=101, batch_size=2)
    ids = corpus_ids(TEXT, WORDS)[:100]
    nll = torch_nll(model, ids[:50])[0] + torch_nll(model, ids[50:100])[0]
    assert r.tokens == 98 and r.perplexity == pytest.approx(math.exp(nll / 98), rel=1e-4)
    assert len(r.extra["streams"]) == 2



def test_load_ir_file_is_kind_ir(setup, tmp_path):
    """An IR file (``--emit-ir``) loads as kind "ir" (the reference interpreter runs it), not as a checkpoint,
    and scores the text like the checkpoint it came from (PyTorch recount)."""
    from click.testing import CliRunner

    from egru_compile.cli import main
    d, model, _ = setup
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "onnx", "--emit-ir", str(tmp_path / "m.ir"),
                                    "-o", str(tmp_path / "onnx"), "--quiet"])
    assert res.exit_code == 0, res.output
    (tmp_path / "vocab.txt").write_text(" ".join(WORDS[:-1]) + "\n")     # the checkpoint's words, in order
    ir = ec.load(tmp_path / "m.ir", vocab=tmp_path / "vocab.txt")
    assert ir.kind == "ir" and ir.target == "ir", ir
    ids = corpus_ids(TEXT, WORDS)[:60]
    nll = torch_nll(model, ids)[0]
    assert ir.evaluate(TEXT, max_tokens=60).perplexity == pytest.approx(math.exp(nll / 59), rel=1e-4)


def test_encode_decode_round_trip(setup):
    art = setup[2]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(WORDS), 200)
    assert np.array_equal(art.encode(art.decode(ids)), ids)
    text = "w3 w4  w5\nw6"
    assert art.decode(art.encode(text)) == "w3 w4 w5\nw6"
    assert art.encode(text).tolist() == [3, 4, 5, WORDS.index("<eos>"), 6]
    with pytest.raises(ec.EgruError, match="'zzz' is not in the vocabulary"):
        art.encode("w1 zzz")
    assert art.encode("w1 zzz", unk="w0").tolist() == [1, 0]


def test_generate_is_a_string_deterministic_by_seed_and_greedy_matches_pytorch(setup):
    d, model, art = setup
    a = art.generate("w1 w2", 12, temperature=0.9, top_k=10, seed=5)
    assert isinstance(a, str) and a.split()[:2] == ["w1", "w2"]
    assert a == art.generate("w1 w2", 12, temperature=0.9, top_k=10, seed=5)
    assert len({art.generate("w1 w2", 12, seed=s) for s in range(4)}) > 1
    greedy = art.generate_result("w1 w2", 8, temperature=0)["tokens"]
    state, ref = model.init_state(1), []
    with torch.no_grad():
        for t in [1, 2]:
            logits, state = model.step(torch.tensor([t]), state)
        for _ in range(8):
            ref.append(int(torch.argmax(logits.reshape(-1))))
            logits, state = model.step(torch.tensor([ref[-1]]), state)
    assert greedy == ref


def test_unknown_words_counted_like_an_independent_recount(setup):
    d, _, art = setup
    text = "w1 zzz w2 W3\nqq w4 w5 w6 W7 yy\n" * 10
    r = art.evaluate(text, unk="w0")
    vocab = set(WORDS)
    words = text.split()
    unknown = sum(w not in vocab and w.lower() not in vocab for w in words)
    folded = sum(w not in vocab and w.lower() in vocab for w in words)
    assert (r.words, r.unknown_words, r.case_folded) == (len(words), unknown, folded) == (100, 30, 20)
    assert r.unknown_share == pytest.approx(unknown / len(words))
    # the same text with the unknown words written as the unk token and the folded ones in lower case
    def fix(w):
        return w if w in vocab else w.lower() if w.lower() in vocab else "w0"
    clean = "".join(" ".join(fix(w) for w in line.split()) + "\n" for line in text.splitlines())
    assert art.evaluate(clean).perplexity == pytest.approx(r.perplexity, rel=1e-12)
    with pytest.raises(ec.EgruError, match="'zzz' is not in the vocabulary"):
        art.evaluate(text)
    # words the text itself writes as the unknown-word token are counted apart
    marked = "w0 w1 zzz w0 w2\nw0 w3\n"
    r = art.evaluate(marked, unk="w0")
    assert (r.unknown_words, r.unk_in_text) == (1, sum(w == "w0" for w in marked.split())) == (1, 3)


def test_case_folding_prompt_and_cased_vocabulary(setup, tmp_path):
    d, model, art = setup
    upper = art.generate_result("W1 W2", 6, seed=1)
    lower = art.generate_result("w1 w2", 6, seed=1)
    assert upper["case_folded"] == 2 and lower["case_folded"] == 0
    assert upper["tokens"] == lower["tokens"] and upper["text"] == lower["text"]
    # a vocabulary that distinguishes case ("A" and "a") folds nothing
    cased = WORDS[:-3] + ["A", "a", "<eos>"]
    save_checkpoint(tmp_path / "c.pt", model, cased)
    c = ec.load(tmp_path / "c.pt")
    with pytest.raises(ec.EgruError, match="'W1' is not in the vocabulary"):
        c.generate("W1", 2)
    from egru_compile.cli import main
    res = CliRunner().invoke(main, ["generate", str(d / "m.onnx"), "--prompt", "W1 w2", "--tokens", "3"])
    assert res.exit_code == 0 and "folded to lower case" in res.stderr and res.stdout.startswith("w1 w2")
    res = CliRunner().invoke(main, ["generate", str(d / "m.onnx"), "--prompt", "W1 w2", "--tokens", "3", "--quiet"])
    assert res.exit_code == 0 and res.stderr == ""


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_dense_baselines_evaluate_like_pytorch_and_do_not_compile(tmp_path, cell):
    from egru_compile.train.baselines import DenseRNNConfig, DenseRNNLanguageModel, save_baseline_checkpoint
    torch.manual_seed(3)
    m = DenseRNNLanguageModel(DenseRNNConfig(len(WORDS), 8, [12, 8], cell)).eval()
    save_baseline_checkpoint(tmp_path / "b.pt", m, WORDS)
    art = ec.load(tmp_path / "b.pt")
    assert art.kind == "baseline" and art.target == cell
    r = art.evaluate(TEXT, max_tokens=150)
    ids = torch.tensor(corpus_ids(TEXT, WORDS)[:150])
    with torch.no_grad():                                  # the whole sequence at once (nn.GRU / nn.LSTM)
        logits, _ = m(ids[:-1, None])
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, len(WORDS)).double(), ids[1:], reduction="sum")
    assert r.tokens == 149 and r.perplexity == pytest.approx(math.exp(float(nll) / 149), rel=1e-5)
    gates = 3 if cell == "gru" else 4
    assert r.macs_per_token == gates * ((8 + 12) * 12 + (12 + 8) * 8) and r.activity == [1.0, 1.0]
    with pytest.raises(ec.EgruError, match=f"dense {cell.upper()} baseline.*no event units to compile"):
        ec.compile(tmp_path / "b.pt", "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_errors_are_egru_errors_with_one_line(setup, tmp_path):
    d = setup[0]
    cases = [lambda: ec.load(tmp_path / "missing"),
             lambda: ec.compile(d / "m.pt", "onnx", tmp_path / "x", weight_dtype="int9"),
             lambda: ec.compile(d / "m.pt", "onnx", tmp_path / "x", no_such_option=1),
             lambda: ec.compile(d / "m.pt", "onnx", tmp_path / "x", placement_objective="latency"),
             lambda: ec.compile(d / "m.pt", "nope", tmp_path / "x"),
             lambda: ec.compile(d / "m.pt", "onnx", d / "m.onnx"),                 # exists, no force
             lambda: setup[2].evaluate("w1"),                      # no whitespace: a file name, and none exists
             lambda: setup[2].evaluate(tmp_path)]
    assert setup[2].evaluate("w1 w2").tokens == 2                  # whitespace: the text (w1 w2 <eos>)
    for case in cases:
        with pytest.raises(ec.EgruError) as e:
            case()
        assert "\n" not in str(e.value).strip(), str(e.value)
    assert not (tmp_path / "x").exists()


def test_runner_api_passes_through(setup):
    art = setup[2]
    art.reset()
    logits = art.step(3)
    assert logits.shape == (len(WORDS),) and art.last_stats is not None
    art.reset_streams(2)
    assert art.step_streams([1, 2]).shape == (2, len(WORDS))


def test_progress_lines_only_for_long_steps():
    import io
    import time

    from egru_compile.progress import step
    out = io.StringIO()
    with step("quick", after=0.5, stream=out):
        pass
    with step("slow", after=0.05, stream=out):
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "slow ..." and lines[1].startswith("slow: done in ") and len(lines) == 2
