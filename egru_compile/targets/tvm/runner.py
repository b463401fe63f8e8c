"""Runner for tvm artifacts: loads the exported library (no recompilation), packs the weights, and streams
tokens; per-step activity and MACs come from the kernels' own event lists.

Every way an artifact directory can be broken — a missing or corrupt ``egru_step.so`` / ``weights.npz``, a
manifest field of the wrong kind, a kernel spec that does not match the weights or the library — is an
:class:`~egru_compile.artifact.ArtifactError` with a one-line message, raised when the artifact is opened."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...artifact import read_verified
from ...artifact import ArtifactError
from ...errors import UsageError, option
from ...runner import NllScorer, Runner, RunStats, StepStats, StreamStats, read_vocab_file
from .target import LIBRARY, WEIGHTS, load_weights



def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_library_bytes(data: bytes, load_module):
    """Load the shared library `data` (bytes already checked against the manifest) from a private copy: a
    fresh temporary directory only this user can enter (0700), removed once the library is mapped, so no other
    process can swap the file between the check and the load."""
    import os
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="egru-lib-")
    try:
        p = os.path.join(d, LIBRARY)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o500)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_module(p)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _spec(path: Path, manifest: dict):
    from .spec import EGRUKernelSpec
    d = manifest.get("spec")
    if not isinstance(d, dict):
        raise ArtifactError(f"{path}/manifest.json has no kernel spec")
    try:
        return EGRUKernelSpec.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{path}/manifest.json: bad kernel spec: {_first_line(e)}") from None


class TVMRunner(Runner):
    target = "tvm"
    #: the state tensors of each layer (the accumulator acc{l} is scratch, rewritten at every step)
    _STATE = ("c", "y", "ei", "ev", "en")

    def __init__(self, path: Path, manifest: dict, threads: int | None = None):
        super().__init__()
        try:
            import tvm  # noqa: F401
        except ImportError:
            raise ArtifactError(f"{path}: a tvm artifact needs Apache TVM "
                                "(pip install apache-tvm==0.27.0.post1)") from None
        from .library import load_module
        from .step_runner import TVMStepRunner
        spec = _spec(path, manifest)
        if spec.u8_events:
            _check_vnni(path)
        # every file is read once, checked against the sealed manifest, and used from those bytes: a file
        # swapped after read_manifest verified it (e.g. during `import tvm`) is refused or never seen
        lib, lib_bytes = read_verified(path, manifest, "library", LIBRARY)
        weights, weight_bytes = read_verified(path, manifest, "weights", WEIGHTS)
        vocab = read_verified(path, manifest, "vocab") if manifest.get("vocab") is not None else None
        try:
            module = load_library_bytes(lib_bytes, load_module)
        except Exception as e:  # noqa: BLE001 - TVM raises its own error types
            raise ArtifactError(f"cannot load {lib}: {_first_line(e)}") from None
        emb, layers, dec_w, dec_b, proj = load_weights(weights, weight_bytes)
        try:
            self.rt = TVMStepRunner(emb, layers, dec_b, dec_w, module=module, spec=spec, projection=proj)
        except (ValueError, TypeError, IndexError) as e:
            raise ArtifactError(f"{weights} does not match the kernel spec: {_first_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - a library without egru_step / egru_run (TVM error types)
            raise ArtifactError(f"{lib} is not an egru-compile step library: {_first_line(e)}") from None
        try:     # one token checks that the library was compiled for these shapes (TVM checks every argument)
            self.rt.run(np.zeros(1, np.int64), copy=False)
        except Exception as e:  # noqa: BLE001 - TVM raises its own error types
            raise ArtifactError(f"{lib} does not match the weights and kernel spec: {_first_line(e)}") from None
        self.rt.reset()
        self.stream_threads = 1
        if threads is not None:
            self.set_threads(threads)
        self.path = str(path)
        self.layer_sizes = list(spec.hidden_sizes)
        self.vocab_size = spec.vocab_size
        if vocab is not None:
            self.vocab = read_vocab_file(*vocab)
        # fan-out of each input unit (for the MAC count of a step)
        self.fan_w = [np.diff(L["W"][0]) for L in layers]
        self.fan_r = [np.diff(L["R"][0]) for L in layers]
        self.embed_macs = int(self.fan_w[0].sum())
        self.v = self.rt.views

    @classmethod
    def from_artifact(cls, path, manifest, **options):
        return cls(Path(path), manifest, **options)

    def reset(self) -> None:
        self.rt.reset()

    def get_state(self):
        """Copies of every state tensor (c, y and y's event list per layer), bit for bit."""
        return [{k: self.v[f"{k}{l}"].copy() for k in self._STATE} for l in range(len(self.layer_sizes))]

    def set_state(self, state) -> None:
        for l, st in enumerate(state):
            for k in self._STATE:
                self.v[f"{k}{l}"][...] = st[k]

    def reset_cells(self) -> None:
        for l in range(len(self.layer_sizes)):
            self.v[f"c{l}"][...] = 0

    def step(self, token: int) -> np.ndarray:
        """One token through `egru_run` (K = 1): activity and MACs come from the kernel's own counts."""
        logits, stats = self.rt.run(np.array([self.check_token(token)]), with_stats=True)
        L = len(self.layer_sizes)
        self.last_stats = StepStats(tuple(int(x) for x in stats[0, :L]), int(stats[0, L]) + self.embed_macs)
        return logits.reshape(-1)

    def _tokens(self, tokens) -> np.ndarray:
        """tokens as int64 [K], each checked to be in the vocabulary."""
        toks = np.asarray(tokens, np.int64).reshape(-1)
        if len(toks) and (toks.min() < 0 or toks.max() >= self.vocab_size):
            self.check_token(int(toks.min() if toks.min() < 0 else toks.max()))
        return toks

    def _run(self, tokens, copy: bool) -> np.ndarray:
        toks = self._tokens(tokens)
        logits, stats = self.rt.run(toks, copy=copy, with_stats=True)
        L = len(self.layer_sizes)
        self.last_run = RunStats(stats[:, :L].astype(np.int64), stats[:, L].astype(np.int64) + self.embed_macs)
        return logits

    def run(self, tokens) -> np.ndarray:
        """K tokens in one packed call (`egru_run`), per-step activity and MACs from the kernel's own counts."""
        return self._run(tokens, copy=True)

    def score(self, tokens, targets, scorer=None) -> np.ndarray:
        """Next-token NLL of K tokens in one ``egru_score`` call (log-softmax fused into the library: the logits
        never reach Python); per-step activity and MACs in ``last_run``. A library without egru_score (compiled
        by an older release) falls back to `run` + `scorer` on its logits buffer."""
        toks = self._tokens(tokens)
        tg = self._tokens(targets)
        if len(tg) != len(toks):
            raise ArtifactError(f"score needs one target per token ({len(toks)} tokens, {len(tg)} targets)")
        if not self.rt.has_score:
            return (scorer or NllScorer())(self._run(toks, copy=False), tg)
        nll, stats = self.rt.score(toks, tg)
        L = len(self.layer_sizes)
        self.last_run = RunStats(stats[:, :L].astype(np.int64), stats[:, L].astype(np.int64) + self.embed_macs)
        return nll

    # -- batched streams: B streams per library call (streams.py) ---------------------------------------
    def reset_streams(self, batch: int) -> None:
        """Start `batch` independent streams from a zero state (separate from the batch-1 state). A library
        without the batched kernels (EvNN's projection decoder, the dense decoder mode) runs the streams one at
        a time through the base class's per-stream states."""
        if not self.native_streams:
            return super().reset_streams(batch)
        if int(batch) < 1:
            raise ArtifactError(f"batch size must be >= 1, got {batch}")
        self.rt.reset_streams(int(batch), threads=self.stream_threads)
        self.stream_batch = int(batch)
        self.last_stream_stats = None

    def set_threads(self, threads: int) -> None:
        """Threads of the batched-stream kernels from the next `reset_streams` on (`eval --threads`): the
        shared-read kernels split each step's scatter, update and decoder over them (results identical for any
        count); batch 1 and the per-stream kernels run on one."""
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or int(threads) < 1:
            raise ArtifactError(f"threads must be an integer >= 1, got {threads!r}")
        why = self.rt.one_thread_reason
        if int(threads) > 1 and why:
            raise UsageError(f"{option('threads')} {int(threads)}: this artifact's streams run one at a time on one "
                             f"thread ({why}); only the shared-read batched kernels split streams over threads")
        self.stream_threads = int(threads)

    @property
    def native_streams(self) -> bool:
        """True when the library has the batched kernels (B streams per call); else the per-stream fallback."""
        return bool(self.rt.has_streams)

    def _streams_in(self, tokens, ndim: int) -> np.ndarray:
        t = self._stream_tokens(tokens, ndim)
        self._tokens(t)
        return t

    def step_streams(self, tokens) -> np.ndarray:
        """One token per stream (int [B]) in one library call -> logits float32 [B, V]; per-stream activity in
        ``last_stream_stats`` (events int64 [B, L], macs int64 [B])."""
        if not self.native_streams:
            return super().step_streams(tokens)
        logits, stats = self.rt.step_streams(self._streams_in(tokens, 1))
        L = len(self.layer_sizes)
        self.last_stream_stats = StreamStats(stats[:, :L].astype(np.int64),
                                               stats[:, L].astype(np.int64) + self.embed_macs)
        return logits.copy()

    def score_streams(self, tokens, targets, scorer=None) -> np.ndarray:
        """NLL (float64 [T, B]) of ``targets[t, b]`` after stream b steps ``tokens[t, b]``: T steps of all B
        streams in one ``egru_streams_score`` call (per-stream event gating; the NLL computed in the library);
        ``last_run`` = RunStats(events int64 [T, B, L], macs int64 [T, B])."""
        if not self.native_streams:
            return super().score_streams(tokens, targets, scorer)
        tok = self._streams_in(tokens, 2)
        tg = np.asarray(targets, np.int64)
        if tg.shape != tok.shape:
            raise ArtifactError(f"targets of shape {list(tg.shape)} for tokens of shape {list(tok.shape)}")
        self._tokens(tg)
        nll, stats = self.rt.score_streams(tok, tg)
        L = len(self.layer_sizes)
        self.last_run = RunStats(stats[..., :L].astype(np.int64), stats[..., L].astype(np.int64) + self.embed_macs)
        return nll


def _check_vnni(path) -> None:
    """A library with uint8-event kernels runs AVX512-VNNI instructions: refuse a host without them (instead of
    an illegal-instruction crash on the first token)."""
    import tvm
    from .spec import has_vnni
    if not has_vnni():
        raise ArtifactError(f"{path} was compiled with --event-dtype u8 (AVX512-VNNI instructions); this CPU "
                            f"({tvm.target.codegen.llvm_get_system_cpu()}) has no AVX512-VNNI: compile it "
                            "again without --event-dtype u8")
