"""Bytes of weights and indices a compiled program touches per token, per part, counted from first principles
from the artifact's own stored weights and the activity measured on the token stream (the benchmarks' roofline
table, `benchmarks/bandwidth.py`, puts them next to the measured time and the core's bandwidth).

Parts: each RNN layer's input matrix W and recurrent matrix R, and the decoder. Per token:

* ``tvm`` (input-major CSR, `egru_compile.targets.tvm.layout`): for every active input unit (the previous
  layer's events of this step for W, the layer's own events of the previous step for R), its column's non-zero
  fan-out x (value bytes + index bytes), plus 2 pointer reads (int32) and the event list entry (int32 index +
  f32 value) per active unit; arrays read once per matvec (a per-row scale, if the build has one) fully.
  Layer 0's W is one row of the ``E @ W0`` table (3 h0 values) in table mode. Decoder: every active unit of the
  last layer reads one row of ``D^T`` (V values) + the bias (V). Sizes and dtypes are those of the loaded
  artifact's tensors.
* ``onnx`` / ``onnx int8`` (``EventMatVec[Q]`` nodes of the artifact's model.onnx; matrix shapes and dtypes from
  its manifest): every active input unit gathers its whole dense row of WT — n_out values including the pruned
  zeros (the CSR initializers are expanded to dense when the session is created) — plus its event entry
  (int64 index + f32 value); int8 adds the f32 per-output scale (n_out) once per product. Layer 0's input is one
  row of the folded f32 table (3 h0). The tied decoder stays f32.
* dense peers (PyTorch, ORT dense): every matrix whole, every token (the embedding row + W0, R0, W1, ...,
  and the V x H decoder), from the model's parameter shapes.

The activation / state traffic (accumulators, c, y, logits: L1/L2 resident) is not counted.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Part:
    name: str                 # "L0 W", "L0 R", ..., "decoder"
    group: str                # timed group: "layer 0", ..., "decoder"
    bytes: float = 0.0        # mean bytes per token
    rows: float = 0.0         # mean rows (active units / matrix rows) read per token
    stream: bool = False      # a whole matrix read front to back (dense peers) rather than gathered rows

    @property
    def row_bytes(self) -> float:
        return self.bytes / self.rows if self.rows else 0.0


@dataclass
class Accounting:
    target: str
    parts: list[Part]
    footprint: float      # bytes of the weight arrays the program gathers from / streams (not the embedding /
    #                       folded gate table, of which a token reads one row)
    notes: list[str] = field(default_factory=list)

    def group_bytes(self, group: str) -> float:
        return sum(p.bytes for p in self.parts if p.group == group or (group == "RNN stack" and
                                                                        p.group.startswith("layer")))


def _isz(a) -> int:
    return np.dtype(a.dtype).itemsize


# ------------------------------------------------------------------------------------------------ tvm
def tvm_accounting(tv, toks, burn: int, n: int, target: str = "tvm") -> Accounting:
    """Walk the stream through the TVM artifact `tv` (a TVMRunner), reading each step's event lists before and
    after the step, and add up what the kernels read (see the module doc). Leaves the runner's state dirty."""
    rt = tv.rt
    v = rt.views
    spec = rt.spec
    L = len(spec.hidden_sizes)
    V = spec.vocab_size
    if spec.projection:
        raise NotImplementedError("projection decoders are not counted")
    from ..targets.tvm.u8_events import padded_events
    fan_w, fan_r = tv.fan_w, tv.fan_r
    acc = {}
    parts = []
    for l, h in enumerate(spec.hidden_sizes):
        parts += [Part(f"L{l} W", f"layer {l}"), Part(f"L{l} R", f"layer {l}")]
    parts.append(Part("decoder", "decoder"))
    P = {p.name: p for p in parts}

    def once(prefix: str) -> float:        # arrays other than the rows of a matrix, read once per product
        return float(sum(a.nbytes for k, a in v.items()
                         if k.startswith(prefix + "_") and k.split("_", 1)[1] not in ("ptr", "idx", "val", "rows")))

    def col_bytes(l, kind):
        return _isz(v[f"{kind}{l}_val"]) + _isz(v[f"{kind}{l}_idx"])

    def product_bytes(l, kind, events):
        """What one event product of matrix `kind` of layer l reads for `events` active inputs: CSR columns
        (values + indices of their non-zeros, 16 B of pointers and event per column), or with uint8 events
        whole dense int8 rows, 8 events per pass (the last pass padded with row 0, which is read too)."""
        if f"{kind}{l}_rows" in v:
            return padded_events(len(events)) * v[f"{kind}{l}_rows"].shape[1] + len(events) * 8 + once(f"{kind}{l}")
        fan = (fan_r if kind == "r" else fan_w)[l]
        return fan[events].sum() * col_bytes(l, kind) + len(events) * 16 + once(f"{kind}{l}")

    tv.reset()
    for i in range(burn + n):
        prev = [v[f"ei{l}"][: int(v[f"en{l}"][0])].copy() for l in range(L)]
        tv.step(int(toks[i]))
        if i < burn:
            continue
        cur = [v[f"ei{l}"][: int(v[f"en{l}"][0])] for l in range(L)]
        # cross-check: the scattered non-zeros equal the kernel's own MAC count (egru_run's fanout_count)
        nnz = sum(int(fan_r[l][prev[l]].sum()) for l in range(L)) + \
            sum(int(fan_w[l][cur[l - 1]].sum()) for l in range(1, L))
        if nnz != tv.last_stats.macs - tv.embed_macs:
            raise AssertionError(f"{target}: counted {nnz} scattered non-zeros, the kernel counted "
                                 f"{tv.last_stats.macs - tv.embed_macs}")
        for l in range(L):
            p = P[f"L{l} R"]
            p.bytes += product_bytes(l, "r", prev[l])
            p.rows += len(prev[l])
            p = P[f"L{l} W"]
            if l == 0 and "tab" in v:
                p.bytes += v["tab"].shape[1] * _isz(v["tab"])
                p.rows += 1
            elif l == 0:
                E = v["emb"].shape[1]
                p.bytes += fan_w[0].sum() * col_bytes(0, "w") + (E + 1) * 4 + E * _isz(v["emb"]) + once("w0")
                p.rows += E
            else:
                p.bytes += product_bytes(l, "w", cur[l - 1])
                p.rows += len(cur[l - 1])
        p = P["decoder"]
        k = len(cur[L - 1])
        rows_read = padded_events(k) if spec.u8_decoder else k
        p.bytes += rows_read * v["dwt"].shape[1] * _isz(v["dwt"]) + k * 8 + sum(a.nbytes for kk, a in v.items()
                                                      if kk.startswith("d") and kk != "dwt")
        p.rows += k
    for p in parts:
        p.bytes /= n
        p.rows /= n
    names = [k for k in v if k.startswith(("w", "r", "d", "b", "thr"))]     # not the table: one row a token
    foot = float(sum(v[k].nbytes for k in names)) + (0.0 if "tab" in v else float(v["emb"].nbytes))
    if spec.u8_events:
        what = ("uint8 events . dense int8 rows (zeros stored, 8 rows per pass)"
                + (", the decoder too" if spec.u8_decoder else f", decoder rows {v['dwt'].dtype}"))
    else:
        dt = sorted({str(v[f"r{l}_val"].dtype) for l in range(L)})
        what = (f"CSR values {'/'.join(dt)}, indices "
                f"{'/'.join(sorted({str(v[f'r{l}_idx'].dtype) for l in range(L)}))}, decoder rows {v['dwt'].dtype}")
    notes = [what + (", layer-0 input = one row of the E @ W0 table" if "tab" in v else "")]
    return Accounting(target, parts, foot, notes)


# ------------------------------------------------------------------------------------------------ onnx
_EV = re.compile(r"^y(\d+)(_next)?_ev")


def _san(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def _part_of_matrix(name: str) -> str | None:
    m = re.match(r"rnns_(\d+)_(recurrent_kernel|kernel)$", _san(name))
    if m:
        return f"L{m.group(1)} {'R' if m.group(2) == 'recurrent_kernel' else 'W'}"
    if _san(name) in ("embeddings_weight", "decoder_weight", "decoder_decoder_weight"):
        return "decoder"
    return None


def onnx_accounting(art_dir, runner, toks, burn: int, n: int, target: str = "onnx") -> Accounting:
    """Bytes per token of the event-gated ONNX program in `art_dir` (an OnnxRunner `runner` opened on it gives
    the per-step events). Reads model.onnx (which WT each EventMatVec gathers from, which events drive it) and
    the manifest's matrix list (shape [n_out, n_in], dtype)."""
    import onnx
    art_dir = Path(art_dir)
    man = json.loads((art_dir / "manifest.json").read_text())
    mats = {_san(m["name"]): m for m in man["weights"]["matrices"]}
    model = onnx.load(str(art_dir / "model.onnx"), load_external_data=False)
    L = len(runner.event_names)
    parts = []
    for l in range(L):
        parts += [Part(f"L{l} W", f"layer {l}"), Part(f"L{l} R", f"layer {l}")]
    parts.append(Part("decoder", "decoder"))
    P = {p.name: p for p in parts}
    gathers = []          # (part, layer of the events, previous step?, n_out, value bytes, once bytes)
    fixed = {}            # part -> bytes per token independent of activity
    foot = 0.0
    for nd in model.graph.node:
        if nd.op_type in ("EventMatVec", "EventMatVecQ", "EventMatVecF16"):
            wt = re.sub(r"(_dense|_T|_f16)+$", "", nd.input[2])
            m = mats.get(wt)
            part = _part_of_matrix(wt)
            ev = _EV.match(nd.input[0])
            if m is None or part is None or ev is None:
                raise ValueError(f"{art_dir}: cannot account for {nd.op_type} over {nd.input[2]}")
            n_out, n_in = m["shape"]
            vb = {"i8": 1, "f16": 2}.get(m.get("dtype", "f32"), 4)
            if nd.op_type == "EventMatVecF16":
                vb = 2
            once = n_out * 4 if nd.op_type == "EventMatVecQ" else 0
            gathers.append((part, int(ev.group(1)), ev.group(2) is None, n_out, vb, once))
            foot += n_out * n_in * vb
        elif nd.op_type == "EmbedMatVec":
            m = mats.get(re.sub(r"(_dense|_T)+$", "", nd.input[2]))
            if m is None:
                raise ValueError(f"{art_dir}: cannot account for EmbedMatVec over {nd.input[2]}")
            fixed["L0 W"] = m["shape"][0] * 4.0      # one row of the folded [V, 3 h0] table (not in foot)
    runner.reset()
    prev = [0] * L
    for i in range(burn + n):
        runner.step(int(toks[i]))
        cur = list(runner.last_stats.events)
        if i >= burn:
            for part, l, use_prev, n_out, vb, once in gathers:
                k = prev[l] if use_prev else cur[l]
                P[part].bytes += k * (n_out * vb + 12) + once
                P[part].rows += k
            for part, b in fixed.items():
                P[part].bytes += b
                P[part].rows += 1
        prev = cur
    for p in parts:
        p.bytes /= n
        p.rows /= n
    dts = sorted({m.get("dtype", "f32") for m in mats.values() if _part_of_matrix(m["name"]) not in (None, "decoder")})
    ddt = sorted({m.get("dtype", "f32") for m in mats.values()
                  if _san(m["name"]) in ("decoder_weight", "decoder_decoder_weight")}) or ["f32"]
    notes = [f"dense WT rows gathered ({'/'.join(dts)}; pruned zeros included), {'/'.join(ddt)} decoder rows, "
             "layer-0 input = one row of the folded table"]
    return Accounting(target, parts, foot, notes)


# ------------------------------------------------------------------------------------------------ dense peers
def dense_accounting(model, target: str) -> Accounting:
    """Every matrix whole every token (PyTorch `step` and the plain ORT MatMul graph compute the same dense
    products): the embedding row + W0, R0, W1, R1, ..., the decoder V x H (+ biases)."""
    parts = []
    foot = 0.0
    E = model.embeddings.weight.shape[1]
    for l, layer in enumerate(model.rnns):
        W, R = layer.kernel, layer.recurrent_kernel
        wb = W.numel() * W.element_size() + layer.bias.numel() * 4 + (E * 4 if l == 0 else 0)
        rb = R.numel() * R.element_size() + layer.recurrent_bias.numel() * 4
        parts += [Part(f"L{l} W", f"layer {l}", float(wb), float(W.shape[0]), True),
                  Part(f"L{l} R", f"layer {l}", float(rb), float(R.shape[0]), True)]
        foot += W.numel() * W.element_size() + R.numel() * R.element_size()
    D = model.embeddings.weight
    dec_b = sum(p.numel() * 4 for n, p in model.named_parameters() if n.startswith("decoder") and "bias" in n)
    parts.append(Part("decoder", "decoder", float(D.numel() * 4 + dec_b), float(D.shape[1]), True))
    foot += D.numel() * 4
    return Accounting(target, parts, foot, ["whole f32 matrices (pruned zeros included)"])
