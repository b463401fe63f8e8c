"""Opening artifacts: the registry that maps an artifact's ``manifest.json`` target to its runner, and
`open_artifact` (a compiled directory -> its target's runner; a checkpoint -> `TorchRunner`; an IR file ->
`GraphRunner`)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

from ..artifact import ArtifactError, read_manifest
from ..data import Vocabulary
from ..errors import option
from ..runner import Runner


#: target name -> factory(path: Path, manifest: dict, **options) -> Runner, for runners registered here
#: directly; the targets' own runners come from the target registry (`targets.registry`)
RUNNERS: dict[str, Callable[..., Runner]] = {}


def register_runner(target: str, factory: Callable[..., Runner]) -> None:
    """Make `open_artifact` open directories whose manifest says ``"target": target`` with
    ``factory(path, manifest, **options)`` (a runner without a compile target; targets registered with
    `targets.register_target` bring their runner)."""
    RUNNERS[target] = factory


def _resolve(manifest: dict):
    target = manifest["target"]
    if target in RUNNERS:
        return RUNNERS[target]
    from ..targets.registry import all_targets, for_manifest
    spec = for_manifest(manifest)
    if spec is not None:
        return spec.open_runner
    known = ", ".join(sorted(set(RUNNERS) | {s.name for s in all_targets()}))
    raise ArtifactError(f"no runner for target {target!r} (known: {known})")


def artifact_projection_activation(manifest: dict) -> str | None:
    """The decoder projection's activation an artifact was compiled with (None: no projection). Artifacts
    written before it was recorded have ``projection`` (onnx, tvm) or a projection in their program (chip)
    and applied relu."""
    act = manifest.get("projection_activation")
    if act is None and (manifest.get("projection") or (manifest.get("spec") or {}).get("projection")):
        from ..model import LEGACY_PROJECTION_ACTIVATION
        act = LEGACY_PROJECTION_ACTIVATION
    return act


def open_artifact(path, *, trust: bool = False, vocab_file=None, projection_activation: str | None = None,
                  **options) -> Runner:
    """Open a compiled artifact directory (runner chosen by its manifest's ``target``) or a source
    checkpoint file (`TorchRunner`). `vocab_file` (a training text) supplies or overrides the vocabulary;
    `projection_activation` the activation of an EvNN state_dict's decoder projection (`load_source`; an
    artifact's is compiled in: a different value is refused); `options` go to the runner (e.g. ``threads=1``
    for onnx). The runner's ``projection_activation`` says the decoder's (None: no projection)."""
    p = Path(path)
    if p.is_dir():
        manifest = read_manifest(p)
        act = artifact_projection_activation(manifest)
        if projection_activation is not None and act is None:
            raise ArtifactError(f"{p}: {option('projection_activation', projection_activation)}: this model has no "
                                "decoder projection")
        if projection_activation is not None and act is not None and projection_activation != act:
            raise ArtifactError(f"{p} was compiled with projection activation {act}; "
                                f"{option('projection_activation', projection_activation)} needs a recompile")
        factory = _resolve(manifest)
        try:
            runner = factory(p, manifest, **options)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, zipfile.BadZipFile, OSError) as e:
            # the files are as compiled (read_manifest verified them): a malformed manifest or file written by
            # hand, or by an incompatible release
            raise ArtifactError(f"{p}: malformed artifact ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
        runner.projection_activation = act
    elif p.is_file():
        from ..frontend import load_source
        from ..frontend.checkpoint import BaselineCheckpointError
        from ..frontend.ir_source import IRSource
        from .torch_runner import GraphRunner, TorchRunner
        try:
            source = load_source(p, trust=trust, vocab_file=vocab_file,
                                 projection_activation=projection_activation)
        except BaselineCheckpointError:                  # a dense GRU/LSTM baseline: evaluates, does not compile
            if projection_activation is not None:
                raise ArtifactError(f"{p}: {option('projection_activation', projection_activation)}: a dense "
                                    "baseline has no decoder projection") from None
            from .baseline_runner import BaselineRunner
            runner = BaselineRunner.from_file(p, **options)
            if vocab_file is not None:
                runner.vocab = Vocabulary.from_train_file(vocab_file)
            return runner
        if isinstance(source, IRSource):                       # an IR file: the reference interpreter
            if options:
                raise ArtifactError(f"unknown runner option(s) for an IR file: {', '.join(sorted(options))}")
            runner = GraphRunner(source.to_graph(), source.vocab, source.path)
        else:
            runner = TorchRunner.from_source(source, **options)
        runner.projection_activation = getattr(source, "projection_activation", None)
    else:
        raise ArtifactError(f"{path}: no such file or directory")
    if vocab_file is not None and p.is_dir():
        vocab = Vocabulary.from_train_file(vocab_file)
        if len(vocab) != runner.vocab_size:
            raise ArtifactError(f"{vocab_file} gives {len(vocab)} words but the model predicts {runner.vocab_size}")
        runner.vocab = vocab
    return runner
