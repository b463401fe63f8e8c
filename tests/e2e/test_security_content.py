"""Security and data safety III (issue 22), content classes: forged or careless *content* is refused with one
`error:` line, whatever brings it in.

* E — wrong numbers accepted: one validator (`ir.content`) for every array that reaches a runner (project
  checkpoints, IR resource files, resealed onnx / tvm / chip artifacts): NaN, Inf, complex and overflowing
  weights refused; a checkpoint whose decoder differs from its embedding refused (never silently merged);
  `clamp {max=nan}` and `train --clip nan` refused.
* F — invalid graphs accepted: the verifier checks op arity and attribute names / values from the op table,
  split axes and state indices are range-checked, targets refuse a graph without recurrent state.
* A — tracebacks: malformed configs, embeddings, kernels, meta, chip mappings, deeply nested IR attributes,
  out-of-range CLI numbers each give one `error:` line.
* A fuzz test of the IR parser + verifier: a few hundred mutants of an emitted IR file raise nothing but the
  project's error type.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_model
from egru_compile.artifact import seal
from egru_compile.cli import main
from egru_compile.errors import EgruError
from egru_compile.frontend import load_source, save_checkpoint
from egru_compile.frontend.checkpoint import FORMAT_TAG, FORMAT_VERSION
from egru_compile.frontend.ir_source import load_ir_source, write_ir
from egru_compile.ir import Graph, TensorType
from egru_compile.ir.interpreter import run_graph
from egru_compile.ir.parser import parse_ir

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res, *needles):
    lines = res.output.strip().splitlines()
    assert res.exit_code != 0, res.output
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A small checkpoint, its IR file (text + resources) and a short text."""
    d = tmp_path_factory.mktemp("content")
    save_checkpoint(d / "m.pt", make_model(), WORDS)
    (d / "data.txt").write_text("w1 w2 w3 w4 w5\nw6 w7 w8\n" * 3)
    src = load_source(d / "m.pt")
    write_ir(d / "m.egir", src.to_graph(), src.vocab)
    return d


def _ir(work, tmp_path, edit, name="x.egir"):
    """A copy of the IR file with `edit` applied to its text (the resource file copied beside it)."""
    text = edit((work / "m.egir").read_text())
    (tmp_path / name).write_text(text)
    shutil.copy(work / "m.egir.npz", tmp_path / (name + ".npz"))
    return tmp_path / name


def _sub_line(pattern, repl, count=1):
    def edit(text):
        new, n = re.subn(pattern, repl, text, count=count, flags=re.M)
        assert n == count, pattern
        return new
    return edit


# ================================================================================================ F
@pytest.mark.parametrize("pattern,repl,needle", [
    # a unary op given two operands (verified and changed the result before)
    (r"tanh\((%\w+)\)", r"tanh(\1, %mul)", "tanh takes 1 operand, given 2"),
    (r"sigmoid\((%\w+)\)", r"sigmoid(\1, \1, \1)", "sigmoid takes 1 operand, given 3"),
    (r"= add\((%\w+), (%\w+)\)", r"= add(\1)", "add takes 2 operands, given 1"),
    # unknown attributes
    (r"tanh\((%\w+)\)", r"tanh(\1) {bogus=1}", "tanh has no attribute 'bogus'"),
    (r"(split\(%\w+\) \{axis=1, )", r"\1extra=true, ", "split has no attribute 'extra'"),
    # attribute values out of range
    (r"split\((%\w+)\) \{axis=1,", r"split(\1) {axis=7,", "split axis 7 is out of range for rank 2"),
    (r"split\((%\w+)\) \{axis=1,", r"split(\1) {axis=-3,", "split axis -3 is out of range"),
    (r"split\((%\w+)\) \{axis=1,", r"split(\1) {axis=1.0,", "axis=1.0 must be a whole number"),
    (r"tanh\((%\w+)\)", r'tanh(\1) {weight_dtype="c64"}', "weight_dtype='c64' must be one of"),
    (r"tanh\((%\w+)\)", r"tanh(\1) {layer=-1}", "layer=-1 must be a whole number >= 0"),
])
def test_verifier_checks_arity_and_attributes(work, tmp_path, pattern, repl, needle):
    path = _ir(work, tmp_path, _sub_line(pattern, repl))
    one_line_error(cli("opt", path), needle)
    one_line_error(cli(path, "--target", "onnx", "-o", tmp_path / "out"), needle)
    assert not (tmp_path / "out").exists()


def _clamp_line(attrs):
    """Insert `%cl = clamp(%tanh) {attrs}` after the tanh line and feed it into the next use of %tanh."""
    def edit(text):
        m = re.search(r"^(\s*)%tanh = tanh\(.*$", text, flags=re.M)
        line = f"\n{m.group(1)}%cl = clamp(%tanh) {{{attrs}}} : tensor<1x12xf32>"
        text = text[:m.end()] + line + text[m.end():]
        rest = text[m.end() + len(line):]
        rest = re.sub(r"\(%tanh\b", "(%cl", rest, count=1)
        rest = re.sub(r", %tanh\b", ", %cl", rest, count=1) if "%cl" not in rest else rest
        return text[:m.end() + len(line)] + rest
    return edit


@pytest.mark.parametrize("attrs,needle", [
    ("max=nan", "max=nan must be a finite number or none"),
    ("min=-inf", "min=-inf must be a finite number"),
    ("min=0.5, max=0.25", "clamp min=0.5 is above max=0.25"),
    ('max="1"', "must be a finite number or none"),
])
def test_clamp_bounds_must_be_finite_and_ordered(work, tmp_path, attrs, needle):
    path = _ir(work, tmp_path, _clamp_line(attrs))
    one_line_error(cli("opt", path), needle)
    one_line_error(cli("eval", path, "--data", work / "data.txt"), needle)


def test_valid_clamp_still_computes_numpy_clip(work, tmp_path):
    """Positive control: a finite, ordered clamp parses and the interpreter computes np.clip of the input."""
    path = _ir(work, tmp_path, _clamp_line("min=-0.25, max=0.25"))
    src = load_ir_source(path)
    g = src.graph
    (cl,) = [n for n in g.nodes if n.op == "clamp" and n.outputs[0].name == "cl"]
    seen = {}
    inputs = [np.array([3], np.int64)] + [np.full(v.type.shape, 0.5, np.float32) for v in g.inputs[1:]]
    run_graph(g, inputs, observe=lambda n, outs: seen.__setitem__(n.outputs[0].name, outs[0]))
    x = seen[cl.inputs[0].name]
    np.testing.assert_array_equal(seen["cl"], np.clip(x, -0.25, 0.25))
    assert np.abs(x).max() > 0.25           # the clamp did something


@pytest.mark.parametrize("old,new,needle", [
    ("l1", "l5", "recurrent state layers [0, 5] are not 0..1"),        # state index beyond the layers
    ("l0 y", "l0 c", "given twice"),
])
def test_state_indices_checked(work, tmp_path, old, new, needle):
    def edit(text):
        text = text.replace(f"{{state_in {old}", f"{{state_in {new}").replace(f"{{state_out {old}",
                                                                             f"{{state_out {new}")
        return text
    path = _ir(work, tmp_path, edit)
    one_line_error(cli(path, "--target", "onnx", "-o", tmp_path / "out"), needle)
    one_line_error(cli("eval", path, "--data", work / "data.txt"), needle)
    assert not (tmp_path / "out").exists()


def test_non_recurrent_graph_refused_by_targets(work, tmp_path):
    """tokens -> embedding -> linear -> logits, no recurrent state: verifies as IR, but no target compiles it."""
    src = load_ir_source(work / "m.egir")
    g = Graph("step")
    tok = g.add_input("tokens", TensorType((1,), "i64"), role="tokens")
    emb = np.asarray(src.graph.const_nodes()[0].attrs["data"], np.float32)
    e = g.op("embedding", g.const(emb, name="emb"), tok)
    out = g.op("linear", e, g.const(emb, name="dec"), g.const(np.zeros(emb.shape[0], np.float32), name="b"))
    out.meta["role"] = "logits"
    g.outputs = [out]
    write_ir(tmp_path / "flat.egir", g, WORDS)
    assert cli("opt", tmp_path / "flat.egir").exit_code == 0          # a valid graph ...
    for target in ("onnx", "loihi2-like"):                               # ... but not a step function
        one_line_error(cli(tmp_path / "flat.egir", "--target", target, "-o", tmp_path / "out"),
                       "no recurrent state")
    one_line_error(cli("eval", tmp_path / "flat.egir", "--data", work / "data.txt"), "no recurrent state")


# ================================================================================================ A (IR)
@pytest.mark.parametrize("where", ["attr", "meta", "vocab"])
def test_deeply_nested_ir_is_one_error_line(work, tmp_path, where):
    deep = "[" * 50_000 + "]" * 50_000
    if where == "attr":
        edit = _sub_line(r"tanh\((%\w+)\)", rf"tanh(\1) {{label={deep}}}")
    elif where == "meta":
        edit = _sub_line(r"^(graph @)", rf"#meta deep = {deep}\n\1")
    else:
        edit = _sub_line(r"^#vocab = .*$", f"#vocab = {deep}")
    path = _ir(work, tmp_path, edit)
    one_line_error(cli("opt", path), "nested")


# ================================================================================================ E
def _checkpoint(tmp_path, mutate, name="bad.pt"):
    m = make_model()
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    obj = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "config": m.config.to_dict(), "vocab": WORDS,
           "state_dict": sd, "meta": {}}
    mutate(obj)
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def _untie(obj):
    obj["state_dict"]["decoder.decoder.weight"] = obj["state_dict"]["decoder.decoder.weight"] * 2


def _nan_embedding(obj):
    obj["state_dict"]["embeddings.weight"] = torch.full_like(obj["state_dict"]["embeddings.weight"], float("nan"))


@pytest.mark.parametrize("mutate,needle", [
    (_untie, "decoder.decoder.weight differs from embeddings.weight"),
    (_nan_embedding, "embeddings.weight contains NaN or Inf"),
])
def test_untied_or_nan_embedding_checkpoint_refused_not_merged(work, tmp_path, mutate, needle):
    """Before: load_state_dict wrote decoder.decoder.weight over the shared embedding table, so an untied
    checkpoint (or one with an all-NaN embedding) compiled as a different, finite model."""
    ckpt = _checkpoint(tmp_path, mutate)
    one_line_error(cli(ckpt, "--target", "onnx", "-o", tmp_path / "out"), needle)
    one_line_error(cli("eval", ckpt, "--data", work / "data.txt"), needle)
    assert not (tmp_path / "out").exists()


def test_tied_checkpoint_loads_with_decoder_equal_to_its_embedding(tmp_path):
    """Positive control: both keys stored equal (what save_checkpoint writes) load, tied to the stored table."""
    ckpt = _checkpoint(tmp_path, lambda obj: None)
    model = load_source(ckpt).model
    stored = torch.load(ckpt, weights_only=True)["state_dict"]["embeddings.weight"]
    assert torch.equal(model.embeddings.weight, stored)
    assert model.decoder.decoder.weight.data_ptr() == model.embeddings.weight.data_ptr()


@pytest.fixture(scope="module")
def artifacts(work):
    out = {}
    for target in ("onnx", "loihi2-like"):
        res = cli(work / "m.pt", "--target", target, "-o", work / target)
        assert res.exit_code == 0, res.output
        out[target] = work / target
    return out


def _forge(array, how):
    a = np.array(array, copy=True)
    if how == "nan":
        a = a.astype(np.float32)
        a.flat[0] = np.nan
    elif how == "inf":
        a = a.astype(np.float32)
        a.flat[-1] = -np.inf
    elif how == "complex":
        a = a.astype(np.complex64)
    elif how == "huge":                      # finite, but every logit becomes the same huge number
        a = np.full(a.shape, 3e38, np.float32)
    elif how == "f64":                       # finite as stored, infinite in float32
        a = a.astype(np.float64)
        a.flat[0] = 1e39
    return a


HOWS = ["nan", "inf", "complex", "huge", "f64"]
NEEDLES = {"nan": "NaN or Inf", "inf": "NaN or Inf", "complex": "complex", "huge": "overflow",
           "f64": "NaN or Inf"}


def _reseal_npz(src: Path, dst: Path, fname: str, key: str, how: str):
    shutil.copytree(src, dst)
    with np.load(dst / fname) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = _forge(arrays[key], how)
    with open(dst / fname, "wb") as f:
        np.savez(f, **arrays)
    seal(dst)                                  # anyone can recompute the checksums


@pytest.mark.parametrize("how", HOWS)
def test_resealed_chip_program_with_bad_numbers_refused(work, artifacts, tmp_path, how):
    _reseal_npz(artifacts["loihi2-like"], tmp_path / "a", "program.npz", "decoder_bias", how)
    one_line_error(cli("eval", tmp_path / "a", "--data", work / "data.txt"), "decoder", NEEDLES[how])


@pytest.mark.parametrize("how", ["nan", "complex", "huge"])
@pytest.mark.parametrize("key", ["l0_W_data", "l1_thr", "embedding"])
def test_resealed_chip_program_layer_arrays_refused(work, artifacts, tmp_path, how, key):
    _reseal_npz(artifacts["loihi2-like"], tmp_path / "a", "program.npz", key, how)
    one_line_error(cli("eval", tmp_path / "a", "--data", work / "data.txt"), "program.npz")


def test_resealed_onnx_initializers_with_bad_numbers_refused(work, artifacts, tmp_path):
    """Before: a decoder bias of 3e38 made eval print perplexity 1.0000, NaN perplexity inf, exit 0."""
    import onnx
    from onnx import numpy_helper
    for how in HOWS:
        dst = tmp_path / how
        shutil.copytree(artifacts["onnx"], dst)
        proto = onnx.load(str(dst / "model.onnx"))
        (init,) = [t for t in proto.graph.initializer if t.name == "decoder_decoder_bias"]
        init.CopyFrom(numpy_helper.from_array(_forge(numpy_helper.to_array(init), how), init.name))
        onnx.save(proto, str(dst / "model.onnx"))
        seal(dst)
        one_line_error(cli("eval", dst, "--data", work / "data.txt"), "decoder_decoder_bias",
                       {"f64": "overflow"}.get(how, NEEDLES[how]) if how != "f64" else "")


def test_resealed_artifacts_unchanged_still_evaluate_like_the_checkpoint(work, artifacts):
    """Positive control: the validator passes genuine artifacts, which score what the source scores (onnx
    here; test_chip.py's evals of genuine chip programs go through the same validator)."""
    ref = json.loads(cli("eval", work / "m.pt", "--data", work / "data.txt", "--json").output)
    for art in (artifacts["onnx"],):
        res = cli("eval", art, "--data", work / "data.txt", "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["perplexity"] == pytest.approx(ref["perplexity"], rel=1e-4)


@pytest.mark.parametrize("how", HOWS)
def test_tvm_weights_loader_refuses_bad_numbers(work, tmp_path, how):
    """The tvm runner's weights.npz loader (no TVM compile needed: the file the runner reads)."""
    from egru_compile.passes import PassManager
    from egru_compile.artifact import ArtifactError
    from egru_compile.targets.stack import extract_stack
    from egru_compile.targets.tvm.target import load_weights, save_weights
    stack = extract_stack(PassManager(None).run(load_source(work / "m.pt").to_graph()))
    save_weights(tmp_path / "weights.npz", stack)
    emb, layers, dec_w, dec_b, _ = load_weights(tmp_path / "weights.npz")     # genuine: loads
    np.testing.assert_array_equal(dec_b, stack.decoder_bias)
    for key in ("decoder_bias", "l0_W_data", "l1_br"):
        with np.load(tmp_path / "weights.npz") as z:
            arrays = {k: z[k] for k in z.files}
        arrays[key] = _forge(arrays[key], how)
        with open(tmp_path / "forged.npz", "wb") as f:
            np.savez(f, **arrays)
        with pytest.raises(ArtifactError, match=NEEDLES[how]):
            load_weights(tmp_path / "forged.npz")


@pytest.mark.parametrize("how", ["nan", "huge", "complex"])
def test_ir_resource_with_bad_numbers_refused(work, tmp_path, how):
    """Before: an IR file whose decoder bias is 3e38 evaluated to perplexity 1.0000 with exit 0."""
    shutil.copy(work / "m.egir", tmp_path / "x.egir")
    with np.load(work / "m.egir.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["decoder_decoder_bias"] = _forge(arrays["decoder_decoder_bias"], how)
    np.savez(tmp_path / "x.egir.npz", **arrays)
    one_line_error(cli("eval", tmp_path / "x.egir", "--data", work / "data.txt"), "decoder_decoder_bias")


def test_ir_bound_is_a_recount_of_the_decoder_row_sums(work, tmp_path):
    """The IR bound refuses exactly when sum_i |W_ji| + |b_j| (states bounded by 1) passes the limit: a
    decoder bias just under the limit minus the largest row sum loads, one just over does not."""
    from egru_compile.ir.content import PREACT_LIMIT
    src = load_ir_source(work / "m.egir")
    emb = [n for n in src.graph.const_nodes() if n.attrs.get("label") == "embeddings.weight"][0].attrs["data"]
    rows = np.abs(np.asarray(emb, np.float64)).sum(1)
    with np.load(work / "m.egir.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for scale, ok in ((0.5, True), (1.01, False)):
        b = np.zeros_like(arrays["decoder_decoder_bias"])
        j = int(np.argmax(rows))
        b[j] = np.float32(scale * (PREACT_LIMIT - rows[j]))
        arrays["decoder_decoder_bias"] = b
        shutil.copy(work / "m.egir", tmp_path / "x.egir")
        np.savez(tmp_path / "x.egir.npz", **arrays)
        if ok:
            load_ir_source(tmp_path / "x.egir")
        else:
            with pytest.raises(EgruError, match="can overflow float32"):
                load_ir_source(tmp_path / "x.egir")


@pytest.mark.parametrize("value,needle", [(3e38, "overflow"), (float("nan"), "NaN or Inf")])
def test_pickled_module_weights_checked_like_a_checkpoint(work, tmp_path, value, needle):
    """A trusted pickled module skips the checkpoint loader's `_build`: its weights get the same content checks
    (before: eval printed perplexity inf with exit 0)."""
    m = make_model()
    with torch.no_grad():
        m.decoder.decoder.bias[3] = value
    torch.save(m, tmp_path / "pickled.pt")
    (tmp_path / "train.txt").write_text(" ".join(WORDS[:-1]) + "\n")
    common = ("--trust-checkpoint", "--vocab", tmp_path / "train.txt")
    one_line_error(cli("eval", tmp_path / "pickled.pt", "--data", work / "data.txt", *common), needle)
    one_line_error(cli(tmp_path / "pickled.pt", "--target", "onnx", "-o", tmp_path / "out", *common), needle)


def test_train_refuses_non_finite_numbers(work, tmp_path):
    data = tmp_path / "ptb"
    data.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(work / "data.txt", data / f"{split}.txt")
    for opt, value in (("--clip", "nan"), ("--lr", "inf"), ("--weight-decay", "nan"), ("--dropout", "nan")):
        one_line_error(cli("train", "--data-dir", data, "-o", tmp_path / "t.pt", opt, value), opt, "finite")
    assert not (tmp_path / "t.pt").exists()


# ================================================================================================ A
def _cfg(**kw):
    def mutate(obj):
        obj["config"].update(kw)
    return mutate


@pytest.mark.parametrize("mutate,needle", [
    (_cfg(vocab_size=10 ** 30), "vocab_size must be a whole number"),
    (_cfg(vocab_size=True), "vocab_size must be a whole number"),
    (_cfg(embedding_size=8.0), "embedding_size must be a whole number"),
    (_cfg(hidden_sizes=[12, 8.5]), "hidden_sizes must be a whole number"),
    (_cfg(hidden_sizes=[True, 8]), "hidden_sizes must be a whole number"),
    (_cfg(hidden_sizes=[2 ** 40, 8]), "hidden_sizes must be a whole number"),
    (_cfg(hidden_sizes=12), "hidden_sizes must be a non-empty list"),
    (_cfg(dampening=float("nan")), "dampening must be a finite number"),
    (_cfg(projection="yes"), "projection must be true or false"),
    (lambda obj: obj.__setitem__("meta", [1, 2]), "meta is a list, not a dict"),
    (lambda obj: obj.__setitem__("meta", "x"), "meta is a str, not a dict"),
    (lambda obj: obj["state_dict"].__setitem__("embeddings.weight", torch.zeros(40)), "embeddings.weight"),
    (lambda obj: obj["state_dict"].__setitem__("embeddings.weight", torch.zeros(40, 8, 2)), "embeddings.weight"),
])
def test_malformed_project_checkpoints_one_line(work, tmp_path, mutate, needle):
    one_line_error(cli("inspect", _checkpoint(tmp_path, mutate)), needle)


def _evnn(tmp_path, mutate):
    m = make_model()
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    mutate(sd)
    torch.save(sd, tmp_path / "evnn.pt")
    (tmp_path / "train.txt").write_text(" ".join(WORDS[:-1]) + "\n")
    return tmp_path / "evnn.pt"


@pytest.mark.parametrize("mutate,needle", [
    (lambda sd: sd.__setitem__("embeddings.weight", torch.zeros(40)), "embeddings.weight has shape (40,)"),
    (lambda sd: sd.__setitem__("embeddings.weight", torch.zeros(40, 8, 1)), "embeddings.weight has shape"),
    (lambda sd: sd.__setitem__("rnns.0.recurrent_kernel", torch.tensor(1.0)), "not matrices"),
    (lambda sd: sd.__setitem__("rnns.1.kernel", torch.zeros(())), "not matrices"),
])
def test_malformed_evnn_state_dicts_one_line(tmp_path, mutate, needle):
    path = _evnn(tmp_path, mutate)
    one_line_error(cli(path, "--target", "onnx", "-o", tmp_path / "out", "--vocab", tmp_path / "train.txt"), needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit,command,needle", [
    (lambda m: m["profile"]["chip"].__setitem__("cores", 0), "eval", "cores = 0 must be a positive integer"),
    (lambda m: m["profile"]["chip"].__setitem__("tiles_x", 0), "eval", "tiles_x = 0"),
    (lambda m: m["profile"]["energy"].__setitem__("synop_pj", "x"), "eval", "synop_pj"),
    (lambda m: m.__setitem__("cores", 0), "inspect", "mapping.json is malformed"),
    (lambda m: m.__setitem__("totals", [1]), "inspect", "mapping.json is malformed"),
])
def test_resealed_chip_mapping_one_line(work, artifacts, tmp_path, edit, command, needle):
    dst = tmp_path / "a"
    shutil.copytree(artifacts["loihi2-like"], dst)
    m = json.loads((dst / "mapping.json").read_text())
    edit(m)
    (dst / "mapping.json").write_text(json.dumps(m))
    seal(dst)
    args = ("eval", dst, "--data", work / "data.txt") if command == "eval" else ("inspect", dst)
    one_line_error(cli(*args), needle)


@pytest.mark.parametrize("args,needle", [
    (("--tokens", "100000000000000000000"), "--tokens"),
    (("--tokens", "1e20"), "--tokens"),
    (("--seed", "-1"), "--seed"),
])
def test_generate_ranges_one_line(work, args, needle):
    one_line_error(cli("generate", work / "m.pt", "--prompt", "w1 w2", *args), needle)


def test_train_huge_model_refused_before_building(work, tmp_path):
    data = tmp_path / "ptb"
    data.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(work / "data.txt", data / f"{split}.txt")
    one_line_error(cli("train", "--data-dir", data, "-o", tmp_path / "t.pt", "--hidden", "100000000,8", "--emb", "8"),
                   "recurrent weights")
    one_line_error(cli("train", "--data-dir", data, "-o", tmp_path / "t.pt", "--seed", "-1"), "--seed")


# ================================================================================================ fuzz
_SNIPPETS = ["%", "(", ")", "{", "}", "[", "]", ",", "=", ":", "<", ">", "@", '"', "\\", "x", "0", "-1",
             "nan", "inf", "1e400", "99999999999999999999", "tensor<1x12xf32>", "tensor<>", "none", "true",
             "relu", "split", "concat", "egru_cell", "const", "{axis=5}", "{max=nan}", "[[[[", "l9", "state_in",
             "dense<[1.0]>", "dense_resource<nope>", "sparse<csr, indptr=[0], indices=[], data=[]>", "loc(",
             "return", "}", "\n", "//", "#meta a = {", "i64", "bool", "f64"]


def _mutate(text: str, rnd: random.Random) -> str:
    lines = text.split("\n")
    kind = rnd.randrange(8)
    i = rnd.randrange(len(lines))
    if kind == 0:                                        # delete a line
        del lines[i]
    elif kind == 1:                                      # duplicate a line
        lines.insert(i, lines[i])
    elif kind == 2:                                      # swap two lines
        j = rnd.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == 3 and lines[i]:                         # delete a span of characters
        a = rnd.randrange(len(lines[i]))
        lines[i] = lines[i][:a] + lines[i][a + rnd.randint(1, 8):]
    elif kind == 4:                                      # insert a snippet
        a = rnd.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:a] + rnd.choice(_SNIPPETS) + lines[i][a:]
    elif kind == 5:                                      # replace a number
        nums = list(re.finditer(r"-?\d+(\.\d+)?", lines[i]))
        if nums:
            m = rnd.choice(nums)
            lines[i] = lines[i][:m.start()] + rnd.choice(["0", "-1", "7", "1e400", "nan", "2147483648",
                                                          "-0", "3.5", "100000"]) + lines[i][m.end():]
    elif kind == 6:                                      # replace an op name or a %value
        words = list(re.finditer(r"%\w+|\b(add|sub|mul|tanh|sigmoid|split|matmul|embedding|cast|linear|"
                                 r"greater|heaviside|relu|concat|clamp)\b", lines[i]))
        if words:
            m = rnd.choice(words)
            new = rnd.choice(["%tokens", "%c0", "%y1", "%nope", "relu", "split", "linear", "egru_cell",
                              "event_matvec", "compress_events", "transpose", "concat", "clamp"])
            lines[i] = lines[i][:m.start()] + new + lines[i][m.end():]
    else:                                                # change a state index / role
        lines[i] = re.sub(r"\bl(\d)\b", lambda m: "l" + rnd.choice("0123459"), lines[i])
        lines[i] = lines[i].replace(rnd.choice(["{state_in", "{state_out", "{tokens", "{logits"]),
                                    rnd.choice(["{state_in", "{state_out", "{tokens", "{logits", "{"]), 1)
    return "\n".join(lines)


def test_fuzz_ir_parser_and_verifier_raise_only_project_errors(work):
    """400 mutants (1-3 random edits each, fixed seed) of an emitted IR file: parsing, verifying, checking as a
    step function and bound, and evaluating one token of an accepted mutant raise nothing but EgruError."""
    from egru_compile.frontend.ir_source import IRSourceError  # noqa: F401 - an EgruError
    from egru_compile.ir.content import check_graph_bounds
    from egru_compile.ir.verify import verify, verify_step
    text = (work / "m.egir").read_text()
    with np.load(work / "m.egir.npz") as z:
        resources = {k: z[k] for k in z.files}
    rnd = random.Random(22)
    accepted = refused = 0
    for i in range(400):
        mutant = text
        for _ in range(rnd.randint(1, 3)):
            mutant = _mutate(mutant, rnd)
        try:
            parsed = parse_ir(mutant, resources, f"mutant{i}")
            verify(parsed.graph, allow_unused=True)
            verify_step(parsed.graph)
            check_graph_bounds(parsed.graph, f"mutant{i}")
            g = parsed.graph
            inputs = [np.zeros(v.type.shape, v.type.np_dtype) for v in g.inputs]
            run_graph(g, inputs)
            accepted += 1
        except EgruError as e:
            assert str(e).strip() and "\n" not in str(e).strip(), (i, str(e))
            refused += 1
        except Exception as e:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"mutant {i} raised {type(e).__name__}: {e}\n{mutant}") from e
    assert refused > 200 and accepted > 10, (accepted, refused)
