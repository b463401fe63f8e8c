"""`compile` (Python keyword target options checked as click checks the CLI's) and `compile_request`, the one
compile path of the CLI and the API (`compile_driver.run_compile`)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EgruError, UsageError, api_spelling
from .artifact_handle import load


def _target_option_fields() -> dict:
    from dataclasses import fields as dfields

    from ..targets.registry import all_targets
    out: dict = {}
    for spec in all_targets():
        for f in dfields(spec.options):
            out.setdefault(f.name, f)
    return out


def _check_target_options(target: str | None, options: dict) -> None:
    """Keyword target options of `compile`: known names, values among the choices / above the minimum (the
    checks click makes on the command line)."""
    known = _target_option_fields()
    for key, value in options.items():
        f = known.get(key)
        if f is None:
            raise UsageError(f"unknown target option {key!r} (options: {', '.join(sorted(known))})")
        meta = f.metadata
        if value is None:
            continue
        if meta.get("choices") and value not in meta["choices"]:
            raise UsageError(f"{key}={value!r}: expected one of {', '.join(meta['choices'])}")
        if meta.get("min") is not None and isinstance(f.default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= meta["min"] \
                    or value == float("inf"):
                raise UsageError(f"{key}={value!r}: expected a finite number >= {meta['min']}")
        elif meta.get("min") is not None and (not isinstance(value, int) or value < meta["min"]):
            raise UsageError(f"{key}={value!r}: expected a whole number >= {meta['min']}")
        if meta.get("path") and not Path(value).is_file():
            raise UsageError(f"{key}: {value} is not a file")


def compile(model, target: str | None = None, out=None, *, calib_data=None, calib_tokens: int = 2000,
            vocab=None, unk: str | None = None, passes: str | None = None, force: bool = False,
            trust: bool = False, verbose: bool = False, progress: bool = False,
            projection_activation: str | None = None, **target_options) -> "Artifact":
    """Compile `model` (project checkpoint, EvNN state_dict, torch.export .pt2 or IR file) for `target`
    (``egru-compile targets`` lists them; None with ``profile=FILE.toml``: a chip of your own) into folder
    `out` (default ``MODEL.TARGET`` in the current directory; ``MODEL.PROFILE`` with a profile file) and open it.

        art = compile("model.pt", "loihi-like", calib_data="ptb.valid.txt", placement_objective="latency")
        art = compile("model.pt", "onnx", "m.onnx", weight_dtype="int8", force=True)
        print(art.summary)                    # the target's headline lines (chip: energy, latency, cores)

    `target_options` are the target's options (the CLI's ``--weight-dtype`` is ``weight_dtype=``). Errors raise
    `EgruError`; nothing is written unless the compile succeeds (an existing `out` is replaced only with
    `force` and only when it is an egru-compile artifact). `projection_activation` ("identity" / "relu"): the
    activation of an EvNN state_dict's decoder projection (`frontend.load_source`)."""
    from ..compile_driver import CompileRequest
    with api_spelling():                  # errors name the keywords passed here (max_chips=), not the CLI's flags
        _check_target_options(target, target_options)
        if isinstance(calib_tokens, bool) or not isinstance(calib_tokens, int) or calib_tokens < 2:
            raise UsageError(f"calib_tokens={calib_tokens!r}: expected a whole number >= 2 (as --calib-tokens)")
        req = CompileRequest(model=str(model), target=target, out_dir=None if out is None else str(out),
                             vocab_file=None if vocab is None else str(vocab), passes=passes,
                             calib_data=None if calib_data is None else str(calib_data),
                             calib_tokens=int(calib_tokens), unk=unk, trust=trust, force=force, verbose=verbose,
                             progress=progress, target_values=dict(target_options),
                             given=frozenset(k for k, v in target_options.items() if v is not None),
                             projection_activation=projection_activation)
        if calib_data is not None and not Path(calib_data).is_file():
            raise EgruError(f"calib_data: {calib_data} is not a file")
        info = compile_request(req, _echo_err if verbose else _silent)
    if info is None:                                      # pragma: no cover - a target is always given here
        raise UsageError("nothing to do: give a target")
    art = load(info["artifact"])
    art.summary = info.get("summary")
    art.compile_info = info
    return art


def _silent(*a, **k):
    pass


def _echo_err(msg="", nl=True, err=False):
    print(msg, end="\n" if nl else "", file=sys.stderr if err else sys.stdout)


def compile_request(req, echo) -> dict | None:
    """`compile_driver.run_compile` (the CLI's and `compile`'s one path)."""
    from ..compile_driver import run_compile
    return run_compile(req, echo)
