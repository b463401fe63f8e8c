"""Extending egru-compile (README "Extending"): a new chip is one TOML file, a user's --profile artifact
compiles, evaluates and inspects, and a new pass is one module."""
from __future__ import annotations

import shutil
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_model
from egru_compile.cli import main
from egru_compile.frontend import save_checkpoint
from egru_compile.runtime import open_artifact
from egru_compile.targets import registry

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _my_chip_toml(tmp_path, name="my-chip"):
    text = (registry.PROFILE_DIR / "loihi-like.toml").read_text()
    text = text.replace('name = "loihi-like"', f'name = "{name}"')
    text = text.replace("compartments = 1024 ", "compartments = 48   ")      # 16 units a core: several cores
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def ckpt(tmp_path):
    model = make_model(hidden=(24, 8), sparsity=0.5)
    save_checkpoint(tmp_path / "m.pt", model, WORDS)
    (tmp_path / "data.txt").write_text("w1 w2 w3 w4 w5\nw6 w7 w8\n")
    return tmp_path / "m.pt", model


def test_new_builtin_chip_is_one_toml_file(tmp_path, monkeypatch, ckpt):
    profiles = tmp_path / "profiles"
    shutil.copytree(registry.PROFILE_DIR, profiles)
    _my_chip_toml(profiles, "new-chip")
    monkeypatch.setattr(registry, "PROFILE_DIR", profiles)
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_loaded", False)
    res = cli("targets")
    assert res.exit_code == 0 and "new-chip" in res.output, res.output
    path, model = ckpt
    res = cli(path, "--target", "new-chip", "-o", tmp_path / "out", "--float-weights")
    assert res.exit_code == 0, res.output
    runner = open_artifact(tmp_path / "out")
    assert runner.target == "new-chip"


def test_custom_profile_artifact_compiles_evaluates_and_inspects(tmp_path, ckpt):
    path, model = ckpt
    prof = _my_chip_toml(tmp_path)
    out = tmp_path / "out"
    res = cli(path, "--profile", prof, "-o", out, "--float-weights")          # the profile names the target
    assert res.exit_code == 0, res.output
    res = cli("eval", out, "--data", tmp_path / "data.txt", "--json")
    assert res.exit_code == 0, res.output
    assert '"target": "my-chip"' in res.output
    res = cli("inspect", out)
    assert res.exit_code == 0 and "my-chip" in res.output, res.output
    # the simulated chip computes what the PyTorch model computes
    runner = open_artifact(out)
    state = model.init_state(1)
    with torch.no_grad():
        for tok in [3, 1, 4, 1, 5]:
            logits, state = model.step(torch.tensor([tok]), state)
            assert np.abs(runner.step(tok) - logits.numpy()[0]).max() < 1e-4


def test_target_options_belong_to_their_target(tmp_path, ckpt):
    path, _ = ckpt
    res = cli(path, "--target", "onnx", "--max-chips", "4", "-o", tmp_path / "o")
    chips = ", ".join(s.name for s in registry.all_targets() if s.family == "chip")
    # a usage error: exit 2
    assert res.exit_code == 2 and res.output.strip() == \
        f"error: --max-chips applies to --target {chips} only (target: onnx)"


def test_new_pass_is_one_module(tmp_path, monkeypatch, ckpt):
    """A pass module written outside the package registers itself on import and runs by name."""
    (tmp_path / "scale_bias_pass.py").write_text(textwrap.dedent('''
        """Test pass: doubles the decoder bias (observable in the logits)."""
        from egru_compile.passes.manager import register_pass

        @register_pass("double-decoder-bias", requires={"masks-folded"})
        def double_decoder_bias(graph, options):
            """Before: const decoder.decoder.bias b. After: 2 b."""
            for node in graph.const_nodes():
                if node.attrs.get("label") == "decoder.decoder.bias":
                    node.attrs["data"] = node.attrs["data"] * 2
            return {"doubled": 1}
    '''))
    from egru_compile.passes.manager import PASS_REGISTRY
    monkeypatch.setattr("egru_compile.passes.manager.PASS_REGISTRY", dict(PASS_REGISTRY))
    import importlib.util
    spec = importlib.util.spec_from_file_location("scale_bias_pass", tmp_path / "scale_bias_pass.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))          # importing registers the pass
    from egru_compile.frontend import load_source
    from egru_compile.ir import Interpreter
    from egru_compile.passes import PassManager
    path, model = ckpt
    g0 = PassManager(None).run(load_source(path).to_graph())
    g1 = PassManager(["const-fold", "fold-masks", "double-decoder-bias"]).run(load_source(path).to_graph())
    bias = model.decoder.decoder.bias.detach().numpy()
    a, b = Interpreter(g0).step(3), Interpreter(g1).step(3)
    assert np.allclose(b - a, bias, atol=1e-5)
    with pytest.raises(Exception, match="double-decoder-bias"):          # order checked before running
        PassManager(["double-decoder-bias"]).run(load_source(path).to_graph())
