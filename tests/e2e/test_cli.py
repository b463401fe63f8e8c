"""CLI: pass pipeline flags, reports, output directory rules, one-line errors."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from conftest import make_model
from egru_compile.cli import main
from egru_compile.frontend import save_checkpoint

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]


@pytest.fixture
def ckpt(tmp_path):
    save_checkpoint(tmp_path / "m.pt", make_model(sparsity=0.7), WORDS)
    (tmp_path / "calib.txt").write_text("w1 w2 w3\nw4 w5 w6 w7\n" * 5)
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_print_ir_after_all_shows_every_pass(ckpt):
    res = run(ckpt / "m.pt", "--print-ir-after-all")
    assert res.exit_code == 0, res.output
    for p in ("const-fold", "fold-masks", "fuse-gates", "fuse-cell", "event-gating", "dce", "count-macs"):
        assert f"IR after {p}" in res.output
    assert "event_matvec(" in res.output and "egru_cell(" in res.output


def test_passes_option_and_verbose_timings(ckpt):
    res = run(ckpt / "m.pt", "--passes", "const-fold,fold-masks", "--print-ir-after-all", "-v")
    assert res.exit_code == 0, res.output
    assert "IR after fold-masks" in res.output and "IR after fuse-cell" not in res.output
    assert "[pass] const-fold" in res.output and " ms" in res.output


def test_unknown_pass_is_one_line_error(ckpt):
    res = run(ckpt / "m.pt", "--passes", "const-fold,frobnicate", "--print-ir")
    assert res.exit_code != 0
    assert res.output.strip().splitlines()[-1].startswith("error: unknown pass 'frobnicate'")


def test_report_json_with_calibration(ckpt):
    res = run(ckpt / "m.pt", "--report", ckpt / "macs.json", "--calib-data", ckpt / "calib.txt",
              "--calib-tokens", "30")
    assert res.exit_code == 0, res.output
    rep = json.loads((ckpt / "macs.json").read_text())
    assert rep["calib_tokens"] == 30
    mpt = rep["macs_per_token"]
    assert mpt["dense"] == (8 + 12) * 36 + (12 + 8) * 24
    assert mpt["dense"] > mpt["static"] > mpt["dynamic"] > 0
    assert len(rep["layers"]) == 2 and len(rep["activity"]) == 2
    assert rep["decoder_macs_per_token"] == 8 * 40
    for layer in rep["layers"]:
        assert {"input", "recurrent", "activity"} <= set(layer)


def test_output_dir_exists_needs_force(ckpt):
    out = ckpt / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = run(ckpt / "m.pt", "--target", "loihi-like", "-o", out)
    assert res.exit_code != 0 and "already exists" in res.output
    assert (out / "keep.txt").exists()


def test_unwritable_output_dir(ckpt):
    res = run(ckpt / "m.pt", "--target", "loihi-like", "-o", ckpt / "missing" / "deeper" / "out")
    assert res.exit_code != 0 and "does not exist" in res.output


def test_nothing_to_do(ckpt):
    res = run(ckpt / "m.pt")
    assert res.exit_code != 0 and "nothing to do" in res.output


def test_no_files_written_outside_output(ckpt):
    before = set(os.listdir(ckpt))
    res = run(ckpt / "m.pt", "--target", "loihi-like", "-o", ckpt / "o")
    assert res.exit_code == 0, res.output
    assert set(os.listdir(ckpt)) - before == {"o"}


def test_onnx_weight_dtype_int8_adds_quantize_and_needs_onnx_target(ckpt):
    import onnx
    res = run(ckpt / "m.pt", "--target", "onnx", "--onnx-weight-dtype", "int8", "-o", ckpt / "o8",
              "--calib-data", ckpt / "calib.txt")
    assert res.exit_code == 0, res.output
    assert "quantize-int8: calibration perplexity" in res.output
    assert "EventMatVecQ" in {f.name for f in onnx.load(str(ckpt / "o8" / "model.onnx")).functions}
    # --onnx-weight-dtype is an alias of the generic --weight-dtype, which every built-in target takes; a value
    # the target cannot store is refused in one line (the built-in chip profiles hold 8-bit weights)
    res = run(ckpt / "m.pt", "--target", "loihi-like", "--onnx-weight-dtype", "f16", "-o", ckpt / "t8")
    assert res.exit_code != 0 and not (ckpt / "t8").exists()
    assert "stores 8-bit weights" in res.output.strip().splitlines()[-1]
    res = run(ckpt / "m.pt", "--target", "onnx", "--weight-dtype", "int8", "-o", ckpt / "w8",
              "--calib-data", ckpt / "calib.txt")
    assert res.exit_code == 0, res.output
    assert (ckpt / "w8" / "model.onnx").read_bytes() == (ckpt / "o8" / "model.onnx").read_bytes()


def test_int8_quantize_goes_before_count_macs_with_passes_default(ckpt):
    res = run(ckpt / "m.pt", "--target", "onnx", "--onnx-weight-dtype", "int8", "--passes", "default",
              "-o", ckpt / "o8d", "-v")
    assert res.exit_code == 0, res.output
    order = [ln.split()[1] for ln in res.output.splitlines() if ln.startswith("[pass] ")]
    assert order.index("quantize-int8") < order.index("count-macs"), order


# ------------------------------------------------------------------ one CLI convention (issue 24, item 5)
def test_help_lists_every_target_and_per_target_option_help():
    from egru_compile.targets.registry import target_names
    res = run("--help")
    assert res.exit_code == 0
    listed = res.output.split("Targets")[1]
    for name in target_names():
        assert f"\n  {name} " in listed, name
    text = " ".join(run("compile", "--help").output.split())
    wd = text.split("--weight-dtype")[1].split("--decoder-dtype")[0]
    assert "[onnx]" in wd and "[tvm]" in wd and "[chip targets] synaptic weights: int8 per-row (auto, the default)" in wd


def test_every_result_command_takes_json_verbose_quiet(ckpt, tmp_path, monkeypatch):
    """compile, eval, generate, inspect, opt, targets, train: --json prints one JSON object on stdout, --quiet
    leaves stderr empty, -v is accepted."""
    from egru_compile.train.data import synthetic_corpus
    monkeypatch.chdir(tmp_path)
    corpus = synthetic_corpus(tmp_path / "corpus", n_lines=60, vocab_size=12)
    art = tmp_path / "m.onnx"
    cmds = {
        "compile": [ckpt / "m.pt", "-t", "onnx", "-o", art, "--emit-ir", tmp_path / "m.egir"],
        "eval": ["eval", art, "--data", ckpt / "calib.txt"],
        "generate": ["generate", art, "--prompt", "W1 w2", "--tokens", "3"],
        "inspect": ["inspect", art],
        "inspect-checkpoint": ["inspect", ckpt / "m.pt"],
        "opt": ["opt", tmp_path / "m.egir", "--passes", "dce"],
        "targets": ["targets"],
        "train": ["train", "--data-dir", corpus, "--model", "gru", "--emb", "8", "--hidden", "8", "--epochs", "1",
                  "--max-steps", "2", "--batch-size", "2", "--bptt", "8", "-o", tmp_path / "g.pt"],
    }
    for name, args in cmds.items():
        res = run(*args, "--json")
        assert res.exit_code == 0, (name, res.output)
        obj = json.loads(res.stdout)
        assert isinstance(obj, dict), name
        if name == "compile":
            assert obj["artifact"] == str(art) and obj["target"] == "onnx"
            res = run(*args, "--force", "--quiet")       # --quiet: nothing on stderr; the result on stdout
            assert res.exit_code == 0 and res.stderr == "" and f"wrote {art} (onnx)" in res.stdout, res.output
        elif name == "train":
            assert obj["output"] == str(tmp_path / "g.pt") and obj["config"]["cell"] == "gru"
        else:
            res = run(*args, "--quiet", "-v")
            assert res.exit_code == 0 and res.stderr == "" and res.stdout, (name, res.output)
    # the prompt was folded: said on stderr without --json, in the JSON field with it
    res = run(*cmds["generate"])
    assert "note: 1 prompt word(s) folded to lower case" in res.stderr and res.stdout.startswith("w1 w2 ")
    assert json.loads(run(*cmds["generate"], "--json").stdout)["case_folded"] == 1
    # the dense gru baseline evaluates and is refused by compile with one line
    res = run("eval", tmp_path / "g.pt", "--data", corpus / "test.txt", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["target"] == "gru", res.output
    res = run(tmp_path / "g.pt", "-t", "onnx")
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "dense GRU baseline" in res.output
    # train: --data is the deprecated spelling of --data-dir
    res = run("train", "--data", corpus, "--data-dir", corpus, "-o", tmp_path / "x.pt")
    assert res.exit_code == 2 and "--data-dir only" in res.output


def test_eval_reports_unknown_words_and_case_folding(ckpt):
    text = ckpt / "mixed.txt"
    text.write_text("W1 w2 zz w3\nw4 W5 w6 qq\n")
    res = run("eval", ckpt / "m.pt", "--data", text, "--unk", "w0")
    assert res.exit_code == 0, res.output
    assert "words         8; unknown 2 (25.00 %, mapped to w0); 2 folded to lower case" in res.stdout
    assert "note: 2 word(s)" in res.stderr
    res = run("eval", ckpt / "m.pt", "--data", text)
    assert res.exit_code == 1 and res.output == "error: " + str(text) + ":1: word 'zz' is not in the vocabulary " \
        "(use --unk TOKEN)\n"


def test_profile_file_names_the_output(ckpt, tmp_path, monkeypatch):
    """A copy of loihi-like.toml saved as my-chip.toml compiles into m.my-chip/ (README "Extending")."""
    from egru_compile.targets.registry import PROFILE_DIR
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-chip.toml").write_text((PROFILE_DIR / "loihi-like.toml").read_text())
    res = run(ckpt / "m.pt", "--profile", "my-chip.toml", "--float-weights", "--quiet")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m.my-chip" / "manifest.json").is_file() and not (tmp_path / "m.loihi-like").exists()
    res = run("inspect", "m.my-chip", "--core", "0", "--json")
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    mapping = json.loads((tmp_path / "m.my-chip" / "mapping.json").read_text())
    assert obj["mapping"]["core"] == next(c for c in mapping["cores"] if c["core"] == 0)


@pytest.mark.parametrize("argv,needle", [
    (["evall", "out", "--data", "x"], "did you mean 'eval'?"),
    (["inspct", "out"], "did you mean 'inspect'?"),
    (["count-macs", "out"], "commands: compile, eval, generate, inspect, opt, targets, train"),
])
def test_mistyped_command_is_named_as_such(tmp_path, monkeypatch, argv, needle):
    """A first word that is no command and no file reads as a mistyped command, not as a model path (which
    made the error name the next argument, e.g. "No such option '--data'")."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no such command or model file") and needle in lines[0]


def test_model_path_named_like_a_command_still_compiles_when_it_exists(tmp_path, monkeypatch):
    """An existing file wins over the mistyped-command reading, whatever its name."""
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "evall", make_model(), [f"w{i}" for i in range(39)] + ["<eos>"])
    res = CliRunner().invoke(main, ["evall", "--target", "onnx", "-o", "o"])
    assert res.exit_code == 0, res.output


def test_unknown_word_hint_can_be_pasted_into_a_shell(tmp_path):
    """The hint for an unknown word names the vocabulary's own marker, shell-quoted (a bare <unk> is a
    redirection): pasted into bash, the suggested command evaluates the text."""
    import shlex
    import subprocess
    import sys
    from pathlib import Path
    example = Path(__file__).resolve().parents[2] / "examples" / "ptb-egru-small" / "model.pt"
    text = tmp_path / "mine.txt"
    text.write_text("the zzqx company said\n")
    res = CliRunner().invoke(main, ["eval", str(example), "--data", str(text)])
    assert res.exit_code == 1 and res.output.strip().endswith("(use --unk '<unk>')"), res.output
    hint = res.output.strip().rsplit("(use ", 1)[1][:-1]
    exe = Path(sys.executable).parent / "egru-compile"
    cmd = f"{shlex.quote(str(exe))} eval {shlex.quote(str(example))} --data {shlex.quote(str(text))} {hint}"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "perplexity" in out.stdout, (out.stdout, out.stderr)


def test_options_that_do_not_apply_and_empty_names_are_usage_errors(tmp_path, monkeypatch):
    """Exit 2 with one line and nothing written, as for the parser's usage errors: an option the artifact's
    runner does not take (eval --threads on onnx, inspect --core on onnx), a value out of range (generate
    --temperature nan), an empty output name (opt -o '', --report '', --emit-ir ''); the API raises the
    same class (calib_tokens=-5)."""
    from pathlib import Path

    import egru_compile as ec
    from egru_compile.errors import UsageError
    monkeypatch.chdir(tmp_path)
    example = Path(__file__).resolve().parents[2] / "examples" / "ptb-egru-small" / "model.pt"
    text = tmp_path / "t.txt"
    text.write_text("the company said\n")
    run = CliRunner().invoke
    assert run(main, [str(example), "--target", "onnx", "-o", "out", "--quiet",
                      "--emit-ir", "m.egir"]).exit_code == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (["eval", "out", "--data", str(text), "--threads", "2"], ["inspect", "out", "--core", "0"],
                 ["generate", "out", "--prompt", "the", "--temperature", "nan"],
                 ["opt", "m.egir", "--passes", "default", "-o", ""],
                 [str(example), "--target", "onnx", "-o", "o2", "--report", ""],
                 [str(example), "--target", "onnx", "-o", "o3", "--emit-ir", ""],
                 [str(example), "--target", "onnx", "-o", "o4", "--calib-tokens", "100"]):     # no --calib-data
        res = run(main, args)
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, res.output)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, args      # nothing written (no ..npz)
    with pytest.raises(UsageError, match="calib_tokens=-5"):
        ec.compile(example, "loihi-like", "pyx", calib_data=str(text), calib_tokens=-5)
    assert not (tmp_path / "pyx").exists()


def test_bare_command_prints_the_help_and_unknown_target_is_a_usage_error(tmp_path):
    """`egru-compile` alone prints its help as laid out (many lines, the targets listed), exit 0; an unknown
    --target and a compile with nothing to do are usage errors (exit 2, one line)."""
    from pathlib import Path
    res = CliRunner().invoke(main, [], prog_name="egru-compile")
    assert res.exit_code == 0 and res.output.startswith("Usage: egru-compile") and "\n  onnx" in res.output
    assert len(res.output.splitlines()) > 10 and "error:" not in res.output
    example = Path(__file__).resolve().parents[2] / "examples" / "ptb-egru-small" / "model.pt"
    for args, msg in ((["--target", "ONNX"], "unknown target 'ONNX'"), ([], "nothing to do")):
        res = CliRunner().invoke(main, [str(example), "-o", str(tmp_path / "o"), *args])
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and msg in lines[0], res.output
        assert not (tmp_path / "o").exists()


def test_missing_artifact_same_message_from_cli_and_api(tmp_path, monkeypatch):
    """A path that does not exist: eval, generate and inspect print the loader's line, the message ec.load
    raises (exit 1: a file error, not a malformed command line)."""
    import egru_compile as ec
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("a b\n")
    with pytest.raises(ec.EgruError) as e:
        ec.load("missing")
    for args in (["eval", "missing", "--data", "t.txt"], ["generate", "missing", "--prompt", "a"],
                 ["inspect", "missing"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 == e.value.exit_code and res.output.strip() == f"error: {e.value}", res.output


def test_no_artifact_inside_another_artifact(tmp_path, monkeypatch):
    """-o inside an existing egru-compile artifact is refused (the outer artifact could no longer be replaced
    with --force); a folder holding another tool's manifest.json is not an artifact and takes outputs."""
    import json as _json
    from pathlib import Path
    monkeypatch.chdir(tmp_path)
    example = Path(__file__).resolve().parents[2] / "examples" / "ptb-egru-small" / "model.pt"
    assert CliRunner().invoke(main, [str(example), "--target", "onnx", "-o", "outer", "--quiet"]).exit_code == 0
    before = sorted(p.name for p in (tmp_path / "outer").iterdir())
    res = CliRunner().invoke(main, [str(example), "--target", "onnx", "-o", "outer/sub"])
    assert res.exit_code == 1 and "inside the egru-compile artifact" in res.output, res.output
    assert sorted(p.name for p in (tmp_path / "outer").iterdir()) == before
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "manifest.json").write_text(_json.dumps({"name": "my app"}))
    res = CliRunner().invoke(main, [str(example), "--target", "onnx", "-o", "web/sub", "--quiet"])
    assert res.exit_code == 0 and (tmp_path / "web" / "sub" / "manifest.json").is_file(), res.output


def test_train_json_names_macs_as_eval_does(tmp_path):
    """train --json gives the dynamic RNN-layer MACs per token the name eval --json gives them."""
    from egru_compile.train.data import synthetic_corpus
    corpus = synthetic_corpus(tmp_path / "c", n_lines=200, vocab_size=12)
    res = CliRunner().invoke(main, ["train", "--data-dir", str(corpus), "--emb", "8", "--hidden", "8",
                                    "--epochs", "1", "--max-steps", "2", "--batch-size", "2", "--bptt", "8",
                                    "--no-progress", "--quiet", "-o", str(tmp_path / "m.pt"), "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["macs_per_token"] > 0 and "dynamic_macs_per_token" not in obj
