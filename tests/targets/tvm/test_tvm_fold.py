"""The tvm target's embedding fold: layer 0's input product read as one row of the table E @ W0 (+ bias),
against a float64 numpy recount; the compile options it shares with the onnx target (``--fold-embedding``,
``--fold-max-mb``, the fold-embedding pass's rule) and what the manifest / report say about the table."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import random_lm
from egru_compile.cli import main
from tvm_reference import rand_model, reference_run

pytest.importorskip("tvm")

from egru_compile.targets.tvm import EGRUKernelSpec, TVMStepRunner  # noqa: E402


def _gx0_of_zero_state(r: TVMStepRunner, tok: int) -> np.ndarray:
    """acc0[:3h0] after one step from the zero state: layer 0's z, r, g_x sums before the update, which no
    recurrent event has touched yet (the update reads acc, it does not write it)."""
    r.reset()
    r.step(tok)
    return r.views["acc0"][:3 * r.spec.hidden_sizes[0]].copy()


def test_f32_table_is_the_float64_recount_of_E_W0_plus_bias():
    E, layers, db = rand_model(vocab=40, emb=12, hidden=(20, 12), sparsity=0.8)
    L0, h = layers[0], 20
    r = TVMStepRunner(E, layers, db, embed_mode="table")
    b64, br64 = L0["b"].astype(np.float64), L0["br"].astype(np.float64)
    bias = np.concatenate([b64[:2 * h] + br64[:2 * h], b64[2 * h:]])       # z, r share b + br; g_x has b
    want = (E.astype(np.float64) @ L0["W"].astype(np.float64) + bias).astype(np.float32)
    np.testing.assert_array_equal(r.views["tab"], want)                    # rounded once, from float64
    for tok in (0, 7, 39):                                                 # and the kernel starts from that row
        np.testing.assert_array_equal(_gx0_of_zero_state(r, tok), want[tok])


def test_int8_table_is_E_times_the_integer_values():
    """int8 layers: the table holds E @ W0's int8 values (float64, rounded once); scale and bias come after."""
    E, layers, db = rand_model(vocab=40, emb=12, hidden=(20, 12), sparsity=0.8, seed=1)
    rng = np.random.default_rng(2)
    q = []
    for L in layers:
        entry = dict(L)
        for k in ("W", "R"):
            ints = rng.integers(-127, 128, L[k].shape).astype(np.int8) * (L[k] != 0)
            p = np.concatenate([[0], np.cumsum((ints != 0).sum(1))]).astype(np.int32)
            rows, cols = np.nonzero(ints)
            entry[k] = (p, cols.astype(np.int32), ints[rows, cols].astype(np.int8))
            entry[f"{k}_scale"] = rng.uniform(0.001, 0.01, L[k].shape[1]).astype(np.float32)
            entry[f"{k}_int"] = ints
        q.append(entry)
    r = TVMStepRunner(E, [{k: v for k, v in L.items() if not k.endswith("_int")} for L in q], db,
                      embed_mode="table", weight_dtype="int8")
    want = (E.astype(np.float64) @ q[0]["W_int"].astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(r.views["tab"], want)
    np.testing.assert_array_equal(_gx0_of_zero_state(r, 5), want[5])


def test_folded_unfolded_and_old_spec_tables_match_the_reference():
    """table (bias in the table), csc (no table) and a spec written before the table held the bias (the
    kernel adds it) give the IR op semantics' logits; a manifest spec without ``table_bias`` is the old kind."""
    E, layers, db = rand_model(vocab=40, emb=12, hidden=(24, 12), sparsity=0.8, seed=3)
    toks = np.random.default_rng(4).integers(0, E.shape[0], 40)
    ref, _ = reference_run(toks, E, layers, E, db)
    old = EGRUKernelSpec.from_dict({k: v for k, v in EGRUKernelSpec(40, 12, (24, 12)).to_dict().items()
                                    if k != "table_bias"})
    assert old.table_bias is False and old.embed_mode == "table"
    for kw in (dict(embed_mode="table"), dict(embed_mode="csc"), dict(spec=old)):
        r = TVMStepRunner(E, layers, db, **kw)
        assert np.abs(r.run(toks) - ref).max() <= 1e-5, kw


def test_the_spec_auto_rule_is_the_fold_pass_rule():
    from egru_compile.passes.fold_embedding import FOLD_MAX_MB
    assert EGRUKernelSpec(40, 12, (24,)).table_limit_mb == FOLD_MAX_MB
    with pytest.raises(ValueError, match="table_bias"):
        EGRUKernelSpec(40, 12, (24,), table_bias="yes")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return random_lm(tmp_path_factory, "tvmfold", vocab=48, emb=16, hidden=(24, 16), sparsity=0.8, seed=5,
                     thr=(0.05, 0.3))


def _compile(d, name, *flags):
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "tvm", "-o", str(d / name), *flags])
    assert res.exit_code == 0, res.output
    return json.loads((d / name / "manifest.json").read_text()), (d / name / "report.txt").read_text()


def test_compile_options_decide_the_fold_and_the_manifest_says_its_size(lm):
    from egru_compile.runtime import open_artifact
    d, model = lm
    mib = 48 * 3 * 24 * 4 / 2 ** 20                                        # V x 3 h0 float32
    cases = {"auto": ((), True), "small": (("--fold-max-mb", "0"), False),
             "forced": (("--fold-max-mb", "0", "--fold-embedding", "on"), True),
             "off": (("--option", "fold_embedding=off"), False)}
    for name, (flags, folded) in cases.items():
        m, report = _compile(d, name, *flags)
        assert m["spec"]["embed_mode"] == ("table" if folded else "csc"), name
        rec = m["folded_embedding"]
        assert rec["folded"] is folded and rec["table_shape"] == [48, 72] and abs(rec["table_mib"] - mib) < 1e-3
        assert ("embedding folded into layer 0's input product" in report) is folded, report
        text = CliRunner().invoke(main, ["inspect", str(d / name)]).output
        assert (f"{mib:,.1f} MiB" in text) and ("[48, 72] float32 table" in text) is folded, text
    state = model.init_state(1)
    runners = [open_artifact(d / name) for name in cases]
    with torch.no_grad():
        for tok in [3, 17, 40, 0, 47, 12, 9, 9, 30]:
            logits, state = model.step(torch.tensor([tok]), state)
            for r in runners:
                assert np.abs(r.step(tok) - logits.numpy()[0]).max() < 1e-5


@pytest.mark.parametrize("flags,message", [
    (("--fold-embedding", "maybe"), "'maybe' is not one of"),
    (("--fold-max-mb", "-1"), "-1.0 is not in the range"),
    (("--option", "fold_max_mb=nan"), "expected a finite number >= 0"),
    (("--fold-max-mb", "nan"), "--fold-max-mb nan: expected a number >= 0"),
])
def test_bad_fold_options_are_one_line_errors(lm, flags, message):
    d, _ = lm
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "tvm", "-o", str(d / "bad"), *flags])
    assert res.exit_code != 0 and message in res.output, res.output
    assert not (d / "bad").exists()


def test_api_checks_fold_max_mb(lm):
    import egru_compile as ec
    from egru_compile.errors import EgruError
    d, _ = lm
    with pytest.raises(EgruError, match="fold_max_mb=-2: expected a finite number >= 0"):
        ec.compile(d / "m.pt", "tvm", d / "bad_api", fold_max_mb=-2)
    assert not (d / "bad_api").exists()
