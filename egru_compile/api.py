"""The Python API: compile a model, open an artifact or checkpoint, encode / decode, generate, evaluate.

    import egru_compile as ec
    art = ec.compile("examples/ptb-egru-small/model.pt", "onnx", "model.onnx")   # -> Artifact
    art = ec.load("model.onnx")              # artifact folder, IR file, checkpoint, or a gru/lstm baseline
    ids = art.encode("the company said")     # numpy int64 token ids (<eos> at each line break)
    art.decode(ids)                          # 'the company said'
    art.generate("The company said", 20, temperature=0.8, top_k=40, seed=0)   # str (prompt + 20 words)
    r = art.evaluate("ptb.test.txt", max_tokens=2000)   # a file, or the text itself; -> EvalResult
    r.perplexity, r.tokens, r.unknown_words, r.macs_per_token, r.activity, r.chip
    art.reset(); logits = art.step(ids[0])   # the runner's streaming API (step, run, score, get_state, ...)
    try: ec.load("nope")
    except ec.EgruError as e: print(e)       # the one-line message the CLI prints as `error: ...`

The command line goes through these functions (`compile_request`, `Artifact.evaluate`,
`Artifact.generate_result`, `inspect`), so the CLI and the API give the same figures.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import EgruError

#: runner methods and attributes an Artifact passes through (`runtime.Runner`)
_RUNNER_API = ("reset", "step", "run", "score", "get_state", "set_state", "reset_streams", "step_streams",
               "score_streams", "last_stats", "last_run", "last_stream_stats", "layer_sizes", "vocab_size",
               "stream_batch", "native_streams", "supports_state")


@dataclass
class EvalResult:
    """What `Artifact.evaluate` measured (`runtime.evaluate` protocol: zero state, state carried through the
    text, T tokens give T-1 predictions). ``unknown_words``: words of the text not in the vocabulary (mapped to
    the ``unk`` token; ``<eos>`` not counted), ``unknown_share`` their share of ``words``; ``case_folded``:
    words found only after folding to lower case; ``unk_in_text``: words the text itself writes as the
    unknown-word token (``<unk>`` in PTB's preprocessed text, 4.8 % of its test words). ``chip``: the simulator's per-token figures (chip artifacts,
    else None). ``extra``: the remaining fields of the JSON form (``streams`` for batch_size > 1, ...)."""

    target: str
    tokens: int
    perplexity: float
    cross_entropy: float
    words: int
    unknown_words: int
    unknown_share: float
    case_folded: int
    unk_in_text: int
    activity: list[float]
    events_per_token: list[float]
    macs_per_token: float
    tokens_per_second: float | None
    seconds: float
    batch_size: int
    layer_sizes: list[int]
    artifact: str | None = None
    data: str | None = None
    chip: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: d.get(k) for k in names}, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict:
        """The JSON object `egru-compile eval --json` prints."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        if d["chip"] is None:
            del d["chip"]
        return d | self.extra


def _target_option_fields() -> dict:
    from dataclasses import fields as dfields

    from .targets.registry import all_targets
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
            raise EgruError(f"unknown target option {key!r} (options: {', '.join(sorted(known))})")
        meta = f.metadata
        if value is None:
            continue
        if meta.get("choices") and value not in meta["choices"]:
            raise EgruError(f"{key}={value!r}: expected one of {', '.join(meta['choices'])}")
        if meta.get("min") is not None and (not isinstance(value, int) or value < meta["min"]):
            raise EgruError(f"{key}={value!r}: expected a whole number >= {meta['min']}")
        if meta.get("path") and not Path(value).is_file():
            raise EgruError(f"{key}: {value} is not a file")


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
    from .compile_driver import CompileRequest
    _check_target_options(target, target_options)
    req = CompileRequest(model=str(model), target=target, out_dir=None if out is None else str(out),
                         vocab_file=None if vocab is None else str(vocab), passes=passes,
                         calib_data=None if calib_data is None else str(calib_data), calib_tokens=int(calib_tokens),
                         unk=unk, trust=trust, force=force, verbose=verbose, progress=progress,
                         target_values=dict(target_options),
                         given=frozenset(k for k, v in target_options.items() if v is not None),
                         projection_activation=projection_activation)
    if calib_data is not None and not Path(calib_data).is_file():
        raise EgruError(f"calib_data: {calib_data} is not a file")
    info = compile_request(req, _echo_err if verbose else _silent)
    if info is None:                                      # pragma: no cover - a target is always given here
        raise EgruError("nothing to do: give a target")
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
    from .compile_driver import run_compile
    return run_compile(req, echo)


def load(path, *, vocab=None, trust: bool = False, **runner_options) -> "Artifact":
    """Open an artifact folder (runner chosen by its manifest), an IR file (``--emit-ir``), a source
    checkpoint (run by PyTorch) or a dense GRU / LSTM baseline of ``train --model gru|lstm``. `vocab`: a
    training text giving the vocabulary (EvNN state_dicts have none); `trust`: allow pickled checkpoints;
    `runner_options` go to the runner (``threads=1`` for onnx) — ``projection_activation="identity" | "relu"``
    to `runtime.open_artifact` (an EvNN state_dict's decoder projection). Errors raise `EgruError`."""
    from .runtime import open_artifact
    p = Path(path)
    runner = open_artifact(p, trust=trust, vocab_file=None if vocab is None else str(vocab), **runner_options)
    return Artifact(p, runner)


class Artifact:
    """A compiled artifact or a checkpoint, ready to run. ``path``, ``target`` (the runner's: "onnx", "tvm", a
    chip name, "torch" for a checkpoint, "gru"/"lstm" for a baseline), ``kind`` ("artifact", "checkpoint",
    "baseline"), ``manifest`` (artifact folders), ``vocab`` (`data.Vocabulary` or None), ``runner``.
    `reset`, `step`, `run`, `score`, `get_state`, `set_state`, `reset_streams`, `step_streams`, `score_streams`
    and the ``last_*`` statistics are the runner's (`runtime.Runner`)."""

    def __init__(self, path, runner):
        from .runtime.baseline_runner import BaselineRunner
        self.path = Path(path)
        self.runner = runner
        self.summary: str | None = None
        self.compile_info: dict | None = None
        self.manifest = None
        if self.path.is_dir():
            from .artifact import read_manifest
            self.manifest = read_manifest(self.path, verify_files=False)
        self.kind = ("artifact" if self.path.is_dir() else
                     "baseline" if isinstance(runner, BaselineRunner) else "checkpoint")

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}, target={self.target!r}, kind={self.kind!r})"

    def __getattr__(self, name):
        if name in _RUNNER_API:
            return getattr(self.runner, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def target(self) -> str:
        return self.runner.target

    @property
    def vocab(self):
        return self.runner.vocab

    def _vocab(self):
        from .data import DataError
        v = self.runner.vocab
        if v is None:
            raise DataError(f"{self.path} has no vocabulary: load it with vocab=TRAIN.txt (CLI: --vocab)")
        if len(v) != self.runner.vocab_size:
            raise EgruError(f"vocabulary has {len(v)} words but the model predicts {self.runner.vocab_size}")
        return v

    # ------------------------------------------------------------------ text <-> ids
    def encode(self, text: str, *, unk: str | None = None, fold_case: bool = True) -> np.ndarray:
        """Token ids (int64) of `text`: its whitespace-separated words, ``<eos>`` for each line break.
        Words the vocabulary lacks map to `unk` (a vocabulary word) or raise `EgruError`; with `fold_case`, a
        word found only in lower case is folded when the vocabulary does not distinguish case (PTB)."""
        from .data.vocab import EOS
        vocab = self._vocab()
        if unk is not None and unk not in vocab.index:
            raise EgruError(f"unk token {unk!r} is not in the vocabulary")
        ids = []
        for n, line in enumerate(str(text).split("\n")):
            if n:
                ids.append(vocab.index[EOS] if EOS in vocab.index else _no_eos())
            for w in line.split():
                i, _ = vocab.lookup(w, fold_case)
                if i is None:
                    if unk is None:
                        raise EgruError(f"word {w!r} is not in the vocabulary (use unk=TOKEN)")
                    i = vocab.index[unk]
                ids.append(i)
        return np.asarray(ids, np.int64)

    def decode(self, ids) -> str:
        """The words of token ids, spaces between them and a line break for each ``<eos>`` (`encode` inverts
        it: ``encode(decode(ids)) == ids``)."""
        from .data.vocab import EOS
        vocab = self._vocab()
        out = []
        for i in np.asarray(ids, np.int64).reshape(-1):
            i = self.runner.check_token(int(i))
            w = vocab.words[i]
            if w == EOS:
                out.append("\n")
            else:
                out.append(w if not out or out[-1] == "\n" else " " + w)
        return "".join(out)

    # ------------------------------------------------------------------ generate / evaluate
    def generate_result(self, prompt: str, tokens: int = 20, *, temperature: float = 1.0, top_k: int | None = None,
                        seed: int = 0, unk: str | None = None) -> dict:
        """`generate` with the details: {"target", "prompt" (its words as encoded), "tokens" (generated ids),
        "words", "text" (prompt + generated words), "case_folded" (prompt words folded to lower case)}."""
        from .runtime.generate import encode_prompt_folded, generate, render
        vocab = self._vocab()
        ids, folded = encode_prompt_folded(vocab, prompt, unk)
        if int(tokens) < 1:
            raise EgruError(f"tokens must be at least 1 (got {tokens})")
        out = generate(self.runner, ids, int(tokens), temperature, top_k or None, seed)
        words = [vocab.words[i] for i in out]
        prompt_words = [vocab.words[i] for i in ids]
        return {"target": self.target, "prompt": prompt_words, "tokens": out.tolist(), "words": words,
                "text": render(prompt_words + words), "case_folded": folded}

    def generate(self, prompt: str, tokens: int = 20, *, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0, unk: str | None = None) -> str:
        """The prompt followed by `tokens` generated words (``<eos>`` as line breaks): sampled from
        softmax(logits / temperature) over the `top_k` most likely words (None: all), greedy with temperature
        0; the same seed gives the same text (`runtime.generate`). Prompt words are folded to lower case when
        the vocabulary does not distinguish case ("The" -> "the" with PTB)."""
        return self.generate_result(prompt, tokens, temperature=temperature, top_k=top_k, seed=seed,
                                    unk=unk)["text"]

    def evaluate(self, text_or_path, batch_size: int = 1, max_tokens: int | None = None, *, unk: str | None = None,
                 progress: bool = False, chunked: int | None = None) -> EvalResult:
        """Streaming perplexity, activity, MACs/token and tokens/s on a text file (a path, or a string without
        whitespace) or on a text itself (a string with whitespace that names no file; ``<eos>`` ends every
        line, as in the corpus). Words the
        vocabulary lacks map to `unk` (counted in ``unknown_words``) or raise `EgruError`; words found only
        in lower case are folded (``case_folded``). `batch_size` B cuts the text into B contiguous streams;
        `max_tokens` uses the first N tokens; `progress` shows a progress bar / line on stderr; `chunked` (bptt):
        EvNN's eval.py protocol (`runtime.evaluate`)."""
        from .progress import step
        from .runtime.evaluate import encode_eval_data, evaluate, text_report
        vocab = self._vocab()
        is_text = isinstance(text_or_path, str) and any(c.isspace() for c in text_or_path) \
            and not os.path.exists(text_or_path)
        if not is_text:
            if not os.path.exists(text_or_path):
                raise EgruError(f"{text_or_path}: no such file (a text to evaluate has at least two words)")
            if Path(text_or_path).is_dir():
                raise EgruError(f"{text_or_path} is a directory: give a text file")
        enc = encode_eval_data(str(text_or_path) if not is_text else text_or_path, vocab, max_tokens, unk,
                               fold_case=True, is_text=is_text)
        tty = sys.stderr.isatty()
        with step(f"evaluating {len(enc.ids)} tokens on {self.target}", progress and not tty):
            result = evaluate(self.runner, enc.ids, quiet=not progress, batch_size=batch_size, chunked=chunked)
        result["projection_activation"] = getattr(self.runner, "projection_activation", None)
        result |= text_report(enc)
        result["data"] = None if is_text else str(text_or_path)
        return EvalResult.from_dict(result)


def evaluate_path(artifact, data, vocab_file=None, max_tokens: int | None = None, unk: str | None = None,
                  quiet: bool = False, trust: bool = False, batch_size: int = 1, chunked: int | None = None,
                  **runner_options) -> dict:
    """`evaluate` of `artifact` (compiled directory or source checkpoint) on text file `data`, encoded with its
    vocabulary (or `vocab_file`'s; words folded to lower case where the vocabulary does not distinguish case).
    Adds ``data`` and the text fields (`text_report`) to the result. The same as `Artifact.evaluate(...).to_dict()`.
    `chunked`: EvNN's protocol (`runtime.evaluate`); ``projection_activation`` (in `runner_options`):
    `open_artifact`'s."""
    res = load(artifact, vocab=vocab_file, trust=trust, **runner_options).evaluate(
        Path(data), batch_size=batch_size, max_tokens=max_tokens, unk=unk, progress=not quiet, chunked=chunked)
    return res.to_dict()


def _no_eos():
    raise EgruError("the text has line breaks but the vocabulary has no <eos>")


def inspect(path, *, core: int | None = None, links: bool = False, trust: bool = False,
            projection_activation: str | None = None) -> tuple[str, dict]:
    """(text, JSON object) describing an artifact folder (its manifest; ``core`` / ``links``: chip details)
    or a source / baseline checkpoint (shapes and densities of its weights): what `egru-compile inspect`
    prints, without and with ``--json``."""
    p = Path(path)
    if p.is_dir():
        from .artifact import read_manifest
        from .targets.registry import for_manifest
        info = read_manifest(p)
        from .runtime.open import artifact_projection_activation
        act = artifact_projection_activation(info)
        if projection_activation is not None and act is not None and projection_activation != act:
            raise EgruError(f"{path} was compiled with projection activation {act}, not {projection_activation}")
        if act is not None:
            info = dict(info, projection_activation=act)
        if for_manifest(info) is None:
            raise EgruError(f"{path}: no target of this installation opens {info['target']!r} artifacts "
                            f"(format {info.get('format')!r})")
        from .targets.describe import describe_artifact
        text = describe_artifact(p, info, core=core, links=links)
        data = {"path": str(p), "kind": "artifact", "manifest": {k: v for k, v in info.items() if k != "files"},
                "files": sorted(info.get("files", {}))}
        if core is not None or links:
            data["mapping"] = _mapping_json(p, info, core, links)
        return text, data
    from .frontend import load_source
    from .frontend.checkpoint import BaselineCheckpointError
    try:
        src = load_source(path, trust=trust, projection_activation=projection_activation)
    except BaselineCheckpointError as e:
        from .runtime.baseline_runner import BaselineRunner
        r = BaselineRunner.from_file(path)
        cfg = r.model.config
        lines = [f"source        {cfg.cell}-baseline (dense; evaluates, does not compile)",
                 f"vocab         {cfg.vocab_size} words" + ("" if r.vocab else " (no vocabulary stored)"),
                 f"embedding     {cfg.embedding_size}", f"layers        {' '.join(map(str, cfg.hidden_sizes))}",
                 f"MACs/token    {r.macs} (dense {cfg.cell.upper()} layers)"]
        return "\n".join(lines) + "\n", {"path": str(p), "kind": f"{e.cell}-baseline", "vocab_size": cfg.vocab_size,
                                         "embedding": cfg.embedding_size, "layers": list(cfg.hidden_sizes),
                                         "macs_per_token": r.macs}
    lines = [f"source        {src.kind}", f"sha256        {src.sha256}"]
    data: dict = {"path": str(p), "kind": src.kind, "sha256": src.sha256}
    if src.model is not None:
        cfg = src.model.config
        lines += [f"vocab         {cfg.vocab_size} words" + ("" if src.vocab else " (no vocabulary stored)"),
                  f"embedding     {cfg.embedding_size}", f"layers        {' '.join(str(h) for h in cfg.hidden_sizes)}"]
        data |= {"vocab_size": cfg.vocab_size, "has_vocab": src.vocab is not None, "embedding": cfg.embedding_size,
                 "layers": list(cfg.hidden_sizes), "weights": {}}
        # one shape convention in every view (ir.sparse.SHAPE_CONVENTION: out x in, as the compiled IR and
        # the onnx/tvm weight tables); EvNN's kernels are stored [in, out], i.e. transposed
        from .ir.sparse import SHAPE_CONVENTION, fmt_matrix_shape
        lines.append(f"shapes        {SHAPE_CONVENTION}; the checkpoint stores the kernels transposed (EvNN [in, out])")
        data["shape_convention"] = SHAPE_CONVENTION
        for i, layer in enumerate(src.model.rnns):
            for name in ("kernel", "recurrent_kernel"):
                w = getattr(layer, name)
                nnz = int((w != 0).sum())
                n_in, n_out = w.shape
                lines.append(f"rnns.{i}.{name:<17} {fmt_matrix_shape(n_out, n_in):<9}  density {nnz / w.numel():.4f}")
                data["weights"][f"rnns.{i}.{name}"] = {"shape": [int(n_out), int(n_in)], "density": nnz / w.numel()}
        proj = getattr(src.model.decoder, "projection", None)
        if proj is not None:           # EvNN's projection decoder (an nn.Linear: its weight is already [out, in])
            from .model import projection_line
            nnz = int((proj.weight != 0).sum())
            inner = "relu(P · y + p)" if cfg.projection_activation == "relu" else "(P · y + p)"
            lines.append(f"decoder       E · {inner} + b (tied E), P {fmt_matrix_shape(*proj.weight.shape)}  "
                         f"density {nnz / proj.weight.numel():.4f}")
            lines.append(f"projection    {projection_line(cfg.projection_activation)}")
            data["decoder"] = {"kind": "projection", "shape": [int(s) for s in proj.weight.shape],
                               "density": nnz / proj.weight.numel(), "activation": cfg.projection_activation}
        else:
            lines.append("decoder       E · y + b (tied to the embedding)")
            data["decoder"] = {"kind": "tied"}
    else:
        lines.append(f"layers        {' '.join(str(h) for h in src.hidden_sizes)}")
        data["layers"] = list(src.hidden_sizes)
    return "\n".join(lines) + "\n", data


def _mapping_json(path: Path, manifest: dict, core: int | None, links: bool) -> dict | None:
    """`inspect --json --core N / --links`: the core's rows of the artifact's mapping.json (``core``, and
    ``simulated`` from the compile's simulation when there was one) and the simulated links (None when the
    artifact has no mapping)."""
    import json
    f = path / "mapping.json"
    if not f.is_file():
        return None
    m = json.loads(f.read_text(encoding="utf-8"))
    out: dict = {}
    if core is not None:
        rows = [c for c in list(m.get("cores") or []) + list((m.get("decoder") or {}).get("cores") or [])
                if isinstance(c, dict) and c.get("core") == core]
        out["core"] = rows[0] if rows else None
        sim = (m.get("simulated") or {}).get("cores")
        out["simulated"] = sim[core] if isinstance(sim, list) and 0 <= core < len(sim) else None
    if links:
        out["links"] = (m.get("simulated") or {}).get("links")
    return out
