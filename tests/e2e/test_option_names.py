"""An error names the option as the user gave it (issue 24): ``max_chips=`` to a caller of
`egru_compile.compile`, ``--max-chips`` on the command line — the same message text, spelled by
`errors.option`. Each case runs the same bad request through both surfaces: the API raises `EgruError` naming
the keyword (and no flag), the CLI prints one ``error:`` line naming the flag (and no keyword), and neither
writes anything."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import egru_compile as ec
from conftest import make_model, random_lm
from egru_compile.cli import main
from egru_compile.frontend import save_checkpoint
from egru_compile.targets.chip.profile import PROFILE_DIR

CHIPS = "loihi-like, loihi2-like, spinnaker2-like"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d, _ = random_lm(tmp_path_factory, "optnames", vocab=60, emb=16, hidden=(96, 64, 16), sparsity=0.8, seed=5,
                     thr=(0.05, 0.3), lines=4, words_per_line=10)
    text = (PROFILE_DIR / "loihi-like.toml").read_text()
    tiny = text.replace("cores = 128 ", "cores = 2 ").replace("synapse_memory_bytes = 131072",
                                                             "synapse_memory_bytes = 4096")
    assert tiny.count("cores = 2 ") == 1 and "synapse_memory_bytes = 4096" in tiny
    (d / "tiny.toml").write_text(tiny)
    save_checkpoint(d / "novocab.pt", make_model(vocab=60, emb=16, hidden=(24, 16), seed=1), None)
    return d


# (model file, target, API keywords, CLI arguments, what the API error says, what the CLI error says)
CASES = {
    "option of another target": (
        "m.pt", "onnx", {"max_chips": 2}, ["--max-chips", "2"],
        f"max_chips= applies to target {CHIPS} only (target: onnx)",
        f"--max-chips applies to --target {CHIPS} only (target: onnx)"),
    "placement over the chip limit": (
        "m.pt", "loihi-like", {"profile": "tiny.toml", "max_chips": 1}, ["--profile", "tiny.toml", "--max-chips", "1"],
        "(raise max_chips=)", "(raise --max-chips)"),
    "contradicting weight options": (
        "m.pt", "loihi-like", {"float_weights": True, "weight_dtype": "int8"},
        ["--float-weights", "--weight-dtype", "int8"],
        "float_weights=True means weight_dtype='f32'; it contradicts weight_dtype='int8'",
        "--float-weights means --weight-dtype f32; it contradicts --weight-dtype int8"),
    "f16 on an 8-bit profile": (
        "m.pt", "loihi-like", {"weight_dtype": "f16"}, ["--weight-dtype", "f16"],
        "weight_dtype='f16' needs 16-bit synaptic weights", "--weight-dtype f16 needs 16-bit synaptic weights"),
    "calibration without a vocabulary": (
        "novocab.pt", "onnx", {"calib_data": "text.txt"}, ["--calib-data", "text.txt"],
        "calib_data= needs a vocabulary: the checkpoint has none, give vocab='TRAIN.txt'",
        "--calib-data needs a vocabulary: the checkpoint has none, give --vocab TRAIN.txt"),
}


def _paths(d, values):
    return {k: str(d / v) if k in ("profile", "calib_data") else v for k, v in values.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_api_names_the_keyword_cli_names_the_flag(files, case):
    model, target, kw, args, api_says, cli_says = CASES[case]
    d = files
    out = d / f"out-{case.replace(' ', '-')}"
    with pytest.raises(ec.EgruError) as e:
        ec.compile(d / model, target, out, **_paths(d, kw))
    msg = str(e.value)
    assert api_says in msg, msg
    assert "--" not in msg, msg                           # no CLI flag in an API error
    assert not out.exists()

    cli_args = [str(d / a) if a.endswith((".toml", ".txt")) else a for a in args]
    res = CliRunner().invoke(main, [str(d / model), "--target", target, "-o", str(out), *cli_args])
    # the same error class on both surfaces: exit 2 for a usage error (an option the target does not take), else 1
    assert res.exit_code == e.value.exit_code == (2 if case == "option of another target" else 1), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and cli_says in lines[0], res.output
    assert not any(f"{k}=" in lines[0] for k in kw), res.output      # no API keyword in a CLI error
    assert not out.exists()


# running an artifact: (API call on the loaded checkpoint, CLI arguments, API error says, CLI error says)
RUN_CASES = {
    "streams too short": (lambda a, d: a.evaluate(d / "text.txt", batch_size=30),
                          ["eval", "{m}", "--data", "{t}", "--batch-size", "30"],
                          "(lower batch_size=)", "(lower --batch-size)"),
    "unknown unk token": (lambda a, d: a.evaluate(d / "text.txt", unk="nope"),
                          ["eval", "{m}", "--data", "{t}", "--unk", "nope"],
                          "unk= token 'nope' is not in the vocabulary", "--unk token 'nope' is not in the vocabulary"),
    "chunked with streams": (lambda a, d: a.evaluate(d / "text.txt", batch_size=2, chunked=5),
                             ["eval", "{m}", "--data", "{t}", "--batch-size", "2", "--chunked", "5"],
                             "chunked= evaluates one stream, as EvNN's eval.py does: use batch_size=1",
                             "--chunked evaluates one stream, as EvNN's eval.py does: use --batch-size 1"),
    "unknown prompt word": (lambda a, d: a.generate("w1 zzqx", 3),
                            ["generate", "{m}", "--prompt", "w1 zzqx", "--tokens", "3"],
                            "is not in the vocabulary (use unk='TOKEN')", "is not in the vocabulary (use --unk TOKEN)"),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_running_errors_name_the_keyword_or_the_flag(files, case):
    """`Artifact.evaluate` / `generate` errors name their keywords; the CLI's eval / generate, which run the same
    methods, name the flags."""
    call, args, api_says, cli_says = RUN_CASES[case]
    d = files
    with pytest.raises(ec.EgruError) as e:
        call(ec.load(d / "m.pt"), d)
    assert api_says in str(e.value) and "--" not in str(e.value), str(e.value)
    res = CliRunner().invoke(main, [a.format(m=d / "m.pt", t=d / "text.txt") for a in args])
    # the same error class on both surfaces: exit 2 for a usage error (options that do not go together), else 1
    assert res.exit_code == e.value.exit_code == (2 if case == "chunked with streams" else 1), res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and cli_says in lines[0], res.output


def test_calibration_of_an_evnn_state_dict_without_vocabulary_is_one_line(files, tmp_path):
    """An EvNN state_dict holds no vocabulary: with --calib-data and no --vocab the refusal is the only line
    (the no-vocabulary warning a compile without calibration prints does not come first)."""
    import torch
    model = make_model(vocab=60, emb=16, hidden=(24, 16), seed=1)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, tmp_path / "evnn.pt")
    res = CliRunner().invoke(main, [str(tmp_path / "evnn.pt"), "--target", "onnx", "-o", str(tmp_path / "o"),
                                    "--calib-data", str(files / "text.txt")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and "--calib-data needs a vocabulary" in lines[0], res.output
    assert not (tmp_path / "o").exists()
