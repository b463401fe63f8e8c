"""Runner for ``target: onnx`` artifacts (onnxruntime, CPU, batch 1)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...artifact import ArtifactError
from ...runner import NllScorer, Runner, RunStats, StepStats, StreamStats, read_vocab_file


def session_options(threads: int = 1, profile_prefix: str | None = None):
    """onnxruntime session options for batch-1 streaming latency: sequential execution, `threads` intra-op
    threads (1: kernels run on the calling thread, no pool hand-offs), every graph optimisation (constant
    folding expands the sparse weights once at load)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


#: onnxruntime graph optimisers the runner switches off: MatMul + bias Add -> Gemm is slower than the two ops
#: for a [1,n] x [n,N] product (the event-gated matvecs): ~4 % of a PTB-size step
DISABLED_OPTIMIZERS = ("MatMulAddFusion",)


def create_session(model, threads: int = 1, profile_prefix: str | None = None,
                   disabled_optimizers=DISABLED_OPTIMIZERS):
    """An onnxruntime CPU session for batch-1 streaming (`session_options`, `DISABLED_OPTIMIZERS`); `model`:
    path or serialized bytes."""
    import onnxruntime as ort
    return ort.InferenceSession(model, session_options(threads, profile_prefix), providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers))


def check_onnx_constants(data: bytes, model: Path) -> None:
    """Every constant tensor of the ONNX model `data` (the bytes of file `model`; initializers, Constant nodes, in the graph and its functions) through
    the content validator (`ir.content.check_array`: real, finite in float32) and the sum of its absolute
    values within the overflow bound (so no product of it with values in [-1, 1] overflows): a resealed model
    with NaN, Inf, complex or overflowing weights is refused. The graph itself is what was sealed."""
    import onnx
    from onnx import numpy_helper

    from ...ir.content import PREACT_LIMIT, ContentError, check_array
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own types
        raise ArtifactError(f"{model} is not a readable ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    tensors = [(t.name, t) for t in proto.graph.initializer]
    for nodes in [proto.graph.node] + [f.node for f in proto.functions]:
        tensors += [(f"{n.name or n.op_type}.{a.name}", a.t) for n in nodes for a in n.attribute
                    if a.type == onnx.AttributeProto.TENSOR]
    try:
        for name, t in tensors:
            try:
                a = numpy_helper.to_array(t)
            except Exception as e:  # noqa: BLE001
                raise ContentError(f"{model}: tensor {name} is unreadable ({type(e).__name__})") from None
            a = check_array(a, f"{model}: tensor {name}", kind="any")
            total = float(np.abs(a.astype(np.float64)).sum()) if a.dtype.kind == "f" else 0.0
            if not total <= PREACT_LIMIT:    # bounds every product of the tensor with values in [-1, 1]
                raise ContentError(f"{model}: tensor {name} can overflow float32 (sum of |values| {total:.3g} > "
                                   f"{PREACT_LIMIT:.3g})")
    except ContentError as e:
        raise ArtifactError(str(e)) from None


_NP = {"float32": np.float32, "int64": np.int64, "int32": np.int32, "float64": np.float64}


class OnnxRunner(Runner):
    """Runs ``model.onnx`` with onnxruntime. With ``io_binding=True`` (default) inputs and outputs are
    bound to preallocated numpy buffers (state double-buffered), so a step allocates and copies nothing
    on the Python side."""

    target = "onnx"

    def __init__(self, model, manifest: dict, *, vocab=None, path=None, threads: int = 1, io_binding: bool = True,
                 profile_prefix: str | None = None):
        super().__init__()
        self.manifest = manifest
        self._model_src = model
        self._threads, self._profile_prefix = threads, profile_prefix
        self._bsess = None
        self.path = None if path is None else str(path)
        self.vocab = vocab
        try:
            self.sess = create_session(model, threads, profile_prefix)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactError(f"onnxruntime cannot load {self.path or 'the model'}: {first}") from e
        ins = {s["name"]: s for s in manifest["inputs"]}
        outs = {s["name"]: s for s in manifest["outputs"]}
        have_in = {i.name for i in self.sess.get_inputs()}
        have_out = {o.name for o in self.sess.get_outputs()}
        if set(ins) != have_in or not set(outs) <= have_out:
            raise ArtifactError(f"{self.path}: model.onnx does not match manifest.json (inputs {sorted(have_in)})")
        self.state_pairs = []          # (input name, output name)
        for o in manifest["outputs"]:
            if o["role"] == "state_out":
                self.state_pairs.append((o["state_input"], o["name"]))
        self.logits_name = next(o["name"] for o in manifest["outputs"] if o["role"] == "logits")
        self.tokens_name = next(i["name"] for i in manifest["inputs"] if i["role"] == "tokens")
        self.event_names = [o["name"] for o in sorted((o for o in manifest["outputs"] if o["role"] == "events"),
                                                      key=lambda o: o["layer"])]
        self.macs_name = next((o["name"] for o in manifest["outputs"] if o["role"] == "macs"), None)
        cs = sorted((i for i in manifest["inputs"] if i["role"] == "state_in" and i.get("kind") == "c"),
                    key=lambda i: i["layer"])
        self.layer_sizes = [int(i["shape"][-1]) for i in cs]
        self.vocab_size = int(outs[self.logits_name]["shape"][-1])
        self._specs = {**ins, **outs}
        self._tok_dtype = _NP.get(ins[self.tokens_name]["dtype"], np.int64)
        self.io_binding = bool(io_binding)
        self._alloc()
        self.reset()

    @classmethod
    def from_artifact(cls, path: Path, manifest: dict, **options) -> "OnnxRunner":
        from ...artifact import read_verified
        # each file read once and checked against the sealed manifest; the session is built from those bytes
        model_path, model = read_verified(path, manifest, "model", "model.onnx")
        check_onnx_constants(model, model_path)
        vocab = read_vocab_file(*read_verified(path, manifest, "vocab")) if manifest.get("vocab") else None
        return cls(model, manifest, vocab=vocab, path=path, **options)

    # ------------------------------------------------------------------ buffers
    def _buf(self, name):
        s = self._specs[name]
        return np.zeros(s["shape"], _NP.get(s["dtype"], np.float32))

    def _alloc(self):
        self._tok = np.zeros(self._specs[self.tokens_name]["shape"], self._tok_dtype)
        self._state = [{i: self._buf(i) for i, _ in self.state_pairs} for _ in range(2)]
        self._logits = self._buf(self.logits_name)
        self._extra = {n: self._buf(n) for n in self.event_names + ([self.macs_name] if self.macs_name else [])}
        self._out_names = [self.logits_name] + [o for _, o in self.state_pairs] + list(self._extra)
        self._cur = 0
        if self.io_binding:
            self._bindings = [self._make_binding(k) for k in range(2)]

    def _make_binding(self, k: int):
        b = self.sess.io_binding()
        src, dst = self._state[k], self._state[1 - k]
        b.bind_cpu_input(self.tokens_name, self._tok)
        for i, o in self.state_pairs:
            b.bind_cpu_input(i, src[i])
            self._bind_out(b, o, dst[i])
        self._bind_out(b, self.logits_name, self._logits)
        for n, a in self._extra.items():
            self._bind_out(b, n, a)
        return b

    @staticmethod
    def _bind_out(b, name, arr: np.ndarray):
        b.bind_output(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)

    # ------------------------------------------------------------------ stepping
    def reset(self) -> None:
        for st in self._state:
            for a in st.values():
                a[...] = 0
        self._cur = 0
        self.last_stats = None

    def step(self, token: int) -> np.ndarray:
        self._tok[...] = self.check_token(token)
        k = self._cur
        if self.io_binding:
            self.sess.run_with_iobinding(self._bindings[k])
        else:
            feed = {self.tokens_name: self._tok, **self._state[k]}
            res = self.sess.run(self._out_names, feed)
            self._logits[...] = res[0]
            for (i, _), r in zip(self.state_pairs, res[1:]):
                self._state[1 - k][i][...] = r
            for (n, a), r in zip(self._extra.items(), res[1 + len(self.state_pairs):]):
                a[...] = r
        self._cur = 1 - k
        # a model compiled without the extras (events / macs outputs) reports zeros
        events = (tuple(int(self._extra[n].reshape(-1)[0]) for n in self.event_names) if self.event_names
                  else (0,) * len(self.layer_sizes))
        macs = int(self._extra[self.macs_name].reshape(-1)[0]) if self.macs_name else 0
        self.last_stats = StepStats(events, macs)
        return self._logits.reshape(-1).copy()

    def get_state(self):
        return {k: v.copy() for k, v in self._state[self._cur].items()}

    def set_state(self, state) -> None:
        for k, v in self._state[self._cur].items():
            v[...] = state[k]

    def reset_cells(self) -> None:
        for k, v in self._state[self._cur].items():
            if self._specs[k].get("kind") == "c":
                v[...] = 0

    def state(self) -> dict[str, np.ndarray]:
        """Copy of the current recurrent state by input name (c0, y0, ...)."""
        return {k: v.copy() for k, v in self._state[self._cur].items()}

    # ------------------------------------------------------------------ batched streams (native)
    def _batched_session(self):
        """The session of the batched model (`targets.onnx.batch.batch_model` of this model), made once."""
        if self._bsess is None:
            import onnx
            from .batch import batch_model
            src = self._model_src
            proto = onnx.load_from_string(src) if isinstance(src, (bytes, bytearray)) else onnx.load(str(src))
            data = batch_model(proto).SerializeToString()
            try:
                self._bsess = create_session(data, self._threads)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ArtifactError(f"onnxruntime cannot load the batched form of {self.path or 'the model'}: "
                                    f"{first}") from e
        return self._bsess

    def reset_streams(self, batch: int) -> None:
        """`batch` streams from a zero state, run by the batched model (symbolic B, per-stream gating) in one
        call per step; the batch-1 state (`reset` / `step`) is left alone."""
        B = int(batch)
        if B < 1:
            raise ArtifactError(f"batch must be at least 1 (got {batch})")
        sess = self._batched_session()
        bshape = lambda name: [B] + list(self._specs[name]["shape"][1:])   # noqa: E731
        buf = lambda name: np.zeros(bshape(name), _NP.get(self._specs[name]["dtype"], np.float32))  # noqa: E731
        self._btok = np.zeros(B, self._tok_dtype)
        self._bstate = [{i: buf(i) for i, _ in self.state_pairs} for _ in range(2)]
        self._blogits = buf(self.logits_name)
        self._bextra = {n: np.zeros(B, np.int64) for n in self.event_names + ([self.macs_name] if self.macs_name else [])}
        self._bcur = 0
        self._bbind = []
        for k in range(2):
            b = sess.io_binding()
            src, dst = self._bstate[k], self._bstate[1 - k]
            b.bind_cpu_input(self.tokens_name, self._btok)
            for i, o in self.state_pairs:
                b.bind_cpu_input(i, src[i])
                self._bind_out(b, o, dst[i])
            self._bind_out(b, self.logits_name, self._blogits)
            for n, a in self._bextra.items():
                self._bind_out(b, n, a)
            self._bbind.append(b)
        self.stream_batch = B
        self.last_stream_stats = None

    def _run_streams(self, tokens) -> None:
        self._btok[...] = tokens
        self._bsess.run_with_iobinding(self._bbind[self._bcur])
        self._bcur = 1 - self._bcur

    def _check_stream_tokens(self, tokens):
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size:
            bad = int(tokens[(tokens < 0) | (tokens >= self.vocab_size)].reshape(-1)[0])
            self.check_token(bad)

    def _stream_events(self) -> np.ndarray:
        if not self.event_names:
            return np.zeros((self.stream_batch, len(self.layer_sizes)), np.int64)
        return np.stack([self._bextra[n] for n in self.event_names], axis=1)

    def _stream_macs(self) -> np.ndarray:
        return self._bextra[self.macs_name].copy() if self.macs_name else np.zeros(self.stream_batch, np.int64)

    def step_streams(self, tokens) -> np.ndarray:
        tokens = self._stream_tokens(tokens, 1)
        self._check_stream_tokens(tokens)
        self._run_streams(tokens)
        self.last_stream_stats = StreamStats(self._stream_events(), self._stream_macs())
        return self._blogits.reshape(self.stream_batch, -1).copy()

    def score_streams(self, tokens, targets, scorer=None) -> np.ndarray:
        tokens = self._stream_tokens(tokens, 2)
        targets = np.asarray(targets, np.int64)
        if targets.shape != tokens.shape:
            raise ArtifactError(f"targets of shape {list(targets.shape)} for tokens of shape {list(tokens.shape)}")
        self._check_stream_tokens(tokens)
        self.check_score_args(tokens, targets)          # every target id in the vocabulary
        scorer = scorer or NllScorer()
        T, B = tokens.shape
        nll = np.empty((T, B), np.float64)
        events = np.zeros((T, B, len(self.layer_sizes)), np.int64)
        macs = np.zeros((T, B), np.int64)
        logits = self._blogits.reshape(B, -1)
        for t in range(T):
            self._run_streams(tokens[t])
            nll[t] = scorer(logits, targets[t])
            for l, n in enumerate(self.event_names):
                events[t, :, l] = self._bextra[n]
            if self.macs_name:
                macs[t] = self._bextra[self.macs_name]
        self.last_run = RunStats(events, macs)
        return nll
