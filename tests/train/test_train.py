"""Training / pruning / DDP tests on a tiny synthetic corpus (no PTB needed; < 30 s in total)."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch

from egru_compile.frontend.checkpoint import load_source, save_checkpoint
from egru_compile.model import EGRUConfig, EGRULanguageModel
from egru_compile.train.data import synthetic_corpus
from egru_compile.train.forward import Regularisation, effective_weight, egru_forward
from egru_compile.train.metrics import measure_activity_and_macs, static_dense_macs
from egru_compile.train.prune import masked_fraction, prunable, prune_to
from egru_compile.train.trainer import TrainConfig, run_training

TINY = dict(emb=16, hidden=[32, 16], batch_size=4, bptt=12, lr=2e-2, warmup_steps=5, weight_decay=0.01,
            thr_init=(0.0, 0.1),
            dropout=0.0, dropout_emb=0.0, dropconnect=0.1, progress=False, threads=1)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_lines=300, vocab_size=24)


def _model(seed=0, hidden=(24, 12), thr=(0.0, 0.3)):
    torch.manual_seed(seed)
    m = EGRULanguageModel(EGRUConfig(40, hidden[-1], list(hidden)))
    with torch.no_grad():
        m.embeddings.weight.uniform_(-1, 1)
        for layer in m.rnns:
            layer.thr.uniform_(*thr)
    return m.eval()


def test_cli_import_is_cheap():
    code = "import sys; from egru_compile.train.cli import train; print(type(train).__name__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["Command", "False"]


def test_train_forward_matches_model_forward():
    m = _model()
    prune_to(m, 0.6)
    tokens = torch.randint(0, 40, (15, 3))
    with torch.no_grad():
        ref, ref_state = m(tokens)
        out = egru_forward(m, tokens, None, Regularisation(0.5, 0.5, 0.5, 0.5), training=False)
    torch.testing.assert_close(out.logits, ref, rtol=1e-5, atol=1e-5)
    for (c, y), (c2, y2) in zip(out.state, ref_state):
        torch.testing.assert_close(c, c2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)


def test_dropconnect_keeps_plain_evnn_parameters():
    m = _model().train()
    names = sorted(n for n, _ in m.named_parameters())
    out = egru_forward(m, torch.randint(0, 40, (5, 2)), None, Regularisation(dropconnect=0.5), training=True)
    out.logits.sum().backward()
    assert sorted(n for n, _ in m.named_parameters()) == names
    assert all(p.grad is not None for n, p in m.named_parameters() if "kernel" in n)


def test_measure_macs_matches_brute_force():
    m = _model(hidden=(20, 12), thr=(0.0, 0.2))
    prune_to(m, 0.7)
    tokens = torch.randint(0, 40, (60,))
    res = measure_activity_and_macs(m, tokens, batch_size=1, bptt=7)
    W = [effective_weight(l, "kernel") for l in m.rnns]
    R = [effective_weight(l, "recurrent_kernel") for l in m.rnns]
    state = m.init_state(1)
    macs, n = 0, 0
    with torch.no_grad():
        for tok in tokens[:-1]:
            prev_y = [y for _, y in state]
            _, state = m.step(tok.view(1), state)
            macs += int((W[0] != 0).sum())
            for li in range(len(m.rnns)):
                macs += int((R[li][prev_y[li][0] != 0] != 0).sum())
                if li + 1 < len(m.rnns):
                    macs += int((W[li + 1][state[li][1][0] != 0] != 0).sum())
            n += 1
    assert res["tokens"] == n
    assert res["dynamic_macs_per_token"] == pytest.approx(macs / n)
    assert res["static_dense_macs"] == static_dense_macs(m) == (12 + 20) * 60 + (20 + 12) * 36
    assert 0 < min(res["activity"]) and max(res["activity"]) < 1


def test_prune_exact_global_sparsity_and_masks_in_checkpoint(tmp_path):
    m = _model()
    total = sum(getattr(mod, n).numel() for mod, n in prunable(m))
    for target in (0.5, 0.75, 0.85):
        prune_to(m, target)
        masked = sum(int((getattr(mod, n + "_mask") == 0).sum()) for mod, n in prunable(m))
        assert masked == round(target * total)
    assert masked_fraction(m) == pytest.approx(round(0.85 * total) / total)
    path = tmp_path / "p.pt"
    save_checkpoint(path, m, [f"w{i}" for i in range(40)])
    sd = torch.load(path, weights_only=True)["state_dict"]
    assert {"rnns.0.kernel_mask", "rnns.0.recurrent_kernel_mask", "rnns.1.kernel_orig"} <= set(sd)
    assert "embeddings.weight" in sd and not any(k.startswith("embeddings") and k.endswith("_mask") for k in sd)
    loaded = load_source(path).model
    zeros = sum(int((getattr(mod, n) == 0).sum()) for mod, n in prunable(loaded))
    assert zeros == round(0.85 * total)
    tokens = torch.randint(0, 40, (10, 2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens)[0], m(tokens)[0])


def test_training_reduces_loss_then_prunes_and_resumes(corpus_dir, tmp_path):
    out = tmp_path / "m.pt"
    cfg = TrainConfig(data=str(corpus_dir), output=str(out), epochs=3, prune_schedule=[0.5, 0.85],
                      finetune_epochs=[1, 1], ckpt_dir=str(tmp_path / "ck"), test=True, act_reg=0.01, **TINY)
    run_training(cfg, echo=lambda *a: None)
    rows = list(csv.DictReader(open(tmp_path / "ck" / "train_log.csv")))
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 5 and [r["stage"] for r in epochs] == ["dense"] * 3 + ["sparsity_50", "sparsity_85"]
    assert float(epochs[2]["train_loss"]) < float(epochs[0]["train_loss"]) - 0.1
    assert float(epochs[2]["valid_ppl"]) < 0.8 * 25  # well below a uniform guess over 25 words
    assert all(0 < float(r["activity_0"]) < 1 for r in epochs)
    src = load_source(out)
    assert src.vocab is not None and len(src.vocab) == 25
    assert masked_fraction(src.model) == pytest.approx(0.85, abs=1e-3)
    assert 1 < src.meta["test_ppl"] < 25 and src.meta["progress"] == {"stage": 2, "epochs_done": 1}
    for name in ("dense.pt", "sparsity_50.pt", "sparsity_85.pt", "last.pt", "last.state.pt", "config.json"):
        assert (tmp_path / "ck" / name).exists()
    assert masked_fraction(load_source(tmp_path / "ck" / "dense.pt").model) == 0.0
    # resume: one more fine-tuning stage on top of the finished run
    cfg2 = TrainConfig(**{**cfg.__dict__, "resume": str(out), "prune_schedule": [0.5, 0.85, 0.9], "finetune_epochs": 1,
                          "output": str(tmp_path / "m2.pt"), "test": False})
    run_training(cfg2, echo=lambda *a: None)
    m2 = load_source(tmp_path / "m2.pt")
    assert masked_fraction(m2.model) == pytest.approx(0.9, abs=1e-3)
    assert m2.meta["progress"] == {"stage": 3, "epochs_done": 1}


def test_dense_gru_baseline_trains(corpus_dir, tmp_path):
    from egru_compile.train.baselines import load_baseline_checkpoint
    cfg = TrainConfig(data=str(corpus_dir), output=str(tmp_path / "g.pt"), model="gru", epochs=2,
                      ckpt_dir=str(tmp_path / "ckg"), **TINY)
    run_training(cfg, echo=lambda *a: None)
    model, words, meta = load_baseline_checkpoint(tmp_path / "g.pt")
    assert len(words) == 25 and meta["valid_ppl"] < 25


def test_ddp_two_processes_identical_parameters(corpus_dir, tmp_path):
    import torch.multiprocessing as mp

    from egru_compile.train.testing import ddp_worker, free_port
    cfg = dict(data=str(corpus_dir), output=str(tmp_path / "ddp.pt"), epochs=1, max_steps=4,
               prune_schedule=[0.5], finetune_epochs=1, ckpt_dir=str(tmp_path / "ckd"), **TINY)
    mp.spawn(ddp_worker, args=(2, free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys() and "rnns.0.kernel_mask" in r0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    torch.manual_seed(cfg.get("seed", 1111))
    init = EGRULanguageModel(EGRUConfig(25, 16, [32, 16]))
    assert not torch.equal(init.embeddings.weight, r0["embeddings.weight"])  # it did train
    assert (tmp_path / "ddp.pt").exists()


@pytest.mark.parametrize("args,needle", [(["--finetune-epochs", "a"], "expected comma-separated whole numbers"),
                                          (["--finetune-epochs", "1,-2"], "cannot be negative"),
                                          (["--model", "gru", "--input-wd-mult", "5"],
                                           "--input-wd-mult applies to --model egru only"),
                                          (["--finetune-epochs", "1,2", "--prune-schedule", "0.5"],
                                           "2 values for 1 pruning steps"),
                                          (["--valid-tokens", "2"], "--eval-batch-size")])
def test_train_cli_rejects_bad_options_in_one_line(corpus_dir, tmp_path, args, needle):
    from click.testing import CliRunner

    from egru_compile.cli import main
    res = CliRunner().invoke(main, ["train", "--data", str(corpus_dir), "--output", str(tmp_path / "m.pt"),
                                    "--epochs", "1", "--max-steps", "1", *args])
    assert res.exit_code != 0 and needle in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "m.pt").exists()
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())     # no checkpoint folder, config or log


def test_pruning_resumes_from_the_dense_checkpoint_in_the_same_ckpt_dir(corpus_dir, tmp_path):
    """examples/ptb-egru-small/run.sh's two steps: dense training into --ckpt-dir CK, then pruning with
    ``--resume CK/dense.pt --epochs 0`` and the same --ckpt-dir. The finished dense stage is skipped, so its
    checkpoint (the --resume input) is not rewritten and the run is allowed; a run that would continue the dense
    stage (more --epochs than the checkpoint has done) writes CK/dense.pt again and is refused in one line."""
    from click.testing import CliRunner

    from egru_compile.cli import main
    ck = tmp_path / "ck"
    common = ["train", "--data-dir", str(corpus_dir), "--emb", "8", "--hidden", "12,8", "--batch-size", "4",
              "--bptt", "10", "--max-steps", "2", "--no-progress", "--ckpt-dir", str(ck)]
    res = CliRunner().invoke(main, [*common, "--epochs", "1", "-o", str(tmp_path / "dense.pt")])
    assert res.exit_code == 0, res.output
    dense = (ck / "dense.pt").read_bytes()
    res = CliRunner().invoke(main, [*common, "--resume", str(ck / "dense.pt"), "--epochs", "0",
                                    "--prune-schedule", "0.5", "--finetune-epochs", "1", "-o", str(tmp_path / "m.pt")])
    assert res.exit_code == 0, res.output
    assert (ck / "dense.pt").read_bytes() == dense and (ck / "sparsity_50.pt").exists()
    assert masked_fraction(load_source(tmp_path / "m.pt").model) == pytest.approx(0.5, abs=1e-3)
    res = CliRunner().invoke(main, [*common, "--resume", str(ck / "dense.pt"), "--epochs", "2",
                                    "-o", str(tmp_path / "m2.pt")])
    assert res.exit_code != 0 and "is the input --resume" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "m2.pt").exists()
    assert (ck / "dense.pt").read_bytes() == dense
