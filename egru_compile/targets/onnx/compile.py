"""`compile_onnx`: IR step graph -> artifact directory ``model.onnx`` + ``manifest.json`` + ``report.txt``
(+ ``vocab.txt``)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx

from ...ir import Graph, verify
from ...model import projection_line
from ..output import VOCAB_FILE, write_vocab
from . import functions as F
from .lower import lower_graph
from .options import OnnxLoweringError, OnnxOptions
from .pipeline import ONNX_PIPELINE_NEEDS  # noqa: F401 - the passes compile_onnx runs (via lower_graph)

MANIFEST_FORMAT = "egru-compile/onnx-model"
MANIFEST_VERSION = 1


def _jsonable(v) -> bool:
    if isinstance(v, np.ndarray):
        return False
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic bytes of `model`."""
    return model.SerializeToString(deterministic=True)


def build_manifest(lowered, source, graph: Graph, opts: OnnxOptions, options, model_bytes: int,
                   vocab_file: str | None) -> dict:
    logits = next(s for s in lowered.outputs if s.role == "logits")
    sizes = [s.shape[-1] for s in sorted((s for s in lowered.inputs if s.role == "state_in" and s.kind == "c"),
                                         key=lambda s: s.layer)]
    generic = {}
    if isinstance(options, dict):
        for k, v in sorted(options.items()):
            if k in ("calib_token_ids", "verbose") or k.startswith("onnx_") or v is None or not _jsonable(v):
                continue
            generic[k] = v
    weights = lowered.stats["weights"]
    nnz = sum(w["nnz"] for w in weights)
    dense = sum(w["shape"][0] * w["shape"][1] for w in weights)
    # the pruned layers alone: named after their checkpoint labels, rnns.L.kernel (the int8 path sanitises
    # them to rnns_L_kernel)
    rnn = [w for w in weights if re.match(r"rnns[._]\d+[._]", str(w["name"]))]
    rnn_nnz, rnn_dense = sum(w["nnz"] for w in rnn), sum(w["shape"][0] * w["shape"][1] for w in rnn)
    from ...passes import MacReport
    from ...passes.utils import graph_projection_activation
    rep = graph.analyses.get(MacReport)
    macs = rep.to_json()["macs_per_token"] if rep else None
    src = None
    if source is not None:
        src = {"path": str(getattr(source, "path", "")) or None, "kind": getattr(source, "kind", None),
               "sha256": getattr(source, "sha256", None)}
    return {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "target": "onnx",
        "model": "model.onnx", "model_bytes": model_bytes,
        "vocab": vocab_file, "vocab_size": int(logits.shape[-1]), "hidden_sizes": sizes,
        "inputs": [s.to_dict() for s in lowered.inputs],
        "outputs": [s.to_dict() for s in lowered.outputs],
        "source_sha256": src["sha256"] if src else None, "source": src,
        "options": {"onnx": opts.to_dict(), **generic},
        "onnx": {"opset": F.OPSET, "ir_version": lowered.model.ir_version, "domain": F.DOMAIN,
                 "domain_version": F.DOMAIN_VERSION, "functions": lowered.stats["functions"],
                 "nodes": lowered.stats["nodes"]},
        "weights": {"nnz": nnz, "dense": dense, "density": (nnz / dense) if dense else None,
                    "rnn_nnz": rnn_nnz, "rnn_dense": rnn_dense,
                    "rnn_density": (rnn_nnz / rnn_dense) if rnn_dense else None,
                    "matrices": weights, "initializer_bytes": lowered.stats["initializer_bytes"]},
        "lowering": {"event_gated_matvecs": lowered.stats["gated_matvecs"],
                     "dense_matvecs": lowered.stats["dense_matvecs"],
                     "folded_embedding": lowered.stats["folded_embedding"]},
        "macs_per_token": macs,
        "projection": rep.to_json().get("projection") if rep else None,     # EvNN's decoder projection
        "projection_activation": graph_projection_activation(graph),       # identity / relu / None
    }


def _rnn_part(w: dict, digits: int = 4) -> str:
    """'; RNN layers a of b, density d' when the total includes tables that are not pruned (the embedding)."""
    if not w.get("rnn_dense") or w["rnn_dense"] == w["dense"]:
        return ""
    return f"; RNN layers {w['rnn_nnz']:,} of {w['rnn_dense']:,}, density {w['rnn_density']:.{digits}f}"


def report_text(m: dict) -> str:
    """The human-readable description written to ``report.txt`` (shown by ``egru-compile inspect``)."""
    w, lo, ox = m["weights"], m["lowering"], m["onnx"]
    lines = [f"model         {m['model']} {m['model_bytes'] / 2 ** 20:.2f} MiB, opset {ox['opset']}, "
             f"{ox['domain']} v{ox['domain_version']}, {ox['nodes']} nodes"]
    if w["dense"]:
        lines.append(f"weights       nnz {w['nnz']:,} of {w['dense']:,} (density {w['density']:.4f}){_rnn_part(w)}")
    for mat in w["matrices"]:
        shape = "x".join(str(s) for s in mat["shape"])
        lines.append(f"  {mat['name']:<30} {shape:<11} nnz {mat['nnz']:>10,}  {mat['stored']}"
                     + (f" {mat['dtype']}" if mat.get("dtype") else ""))
    lines.append(f"lowering      {lo['event_gated_matvecs']} event-gated, {lo['dense_matvecs']} dense matvecs"
                 + (", embedding folded into layer 0" if lo["folded_embedding"] else ""))
    if m.get("projection_activation"):
        lines.append("projection    " + projection_line(m["projection_activation"]))
    lines.append(f"ai.egru ops   {', '.join(ox['functions'])}")
    lines.append("inputs        " + ", ".join(f"{s['name']}{s['shape']}" for s in m["inputs"]))
    lines.append("outputs       " + ", ".join(f"{s['name']}{s['shape']}" for s in m["outputs"]))
    if m.get("macs_per_token"):
        lines.append("MACs/token    " + ", ".join(f"{k} {v:,.0f}" for k, v in m["macs_per_token"].items()
                                                  if v is not None))
    lines.append(f"options       {json.dumps(m['options']['onnx'], sort_keys=True)}")
    return "\n".join(lines) + "\n"


def compile_onnx(graph: Graph, source, out_dir, options=None) -> dict:
    """Lower `graph` (IR step graph; optimised or not) — after the target's passes `ONNX_PIPELINE_NEEDS`,
    which `lower_graph` runs on a copy — to ``out_dir/model.onnx`` + ``manifest.json``
    (+ ``vocab.txt`` when `source` has a vocabulary). `source` is the `SourceModel` it came from (or None).
    `options`: the compile options dict; ONNX keys are the fields of `OnnxOptions` (optionally prefixed
    ``onnx_``). Like every target it writes into `out_dir` (created if missing); the CLI passes a fresh
    temporary directory that it renames into place on success. Nothing is written before the model has
    been lowered and checked. Returns ``{"summary", "manifest"}``."""
    opts = OnnxOptions.from_options(options)
    out_dir = Path(out_dir)
    verify(graph)
    lowered = lower_graph(graph, opts)
    try:
        onnx.checker.check_model(lowered.model, full_check=True)
    except onnx.checker.ValidationError as e:    # a lowering bug, reported in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxLoweringError(f"generated ONNX model fails the checker: {first}") from e
    data = serialize(lowered.model)
    vocab = getattr(source, "vocab", None) if source is not None else None
    if vocab is not None and len(vocab) != lowered.outputs[0].shape[-1]:
        raise OnnxLoweringError(f"vocabulary has {len(vocab)} words but the model predicts "
                                f"{lowered.outputs[0].shape[-1]}")
    vocab_file = VOCAB_FILE if vocab is not None else None
    manifest = build_manifest(lowered, source, graph, opts, options, len(data), vocab_file)
    if lowered.stats.get("decoder_precision"):       # what decoder_dtype chose, and the calibration behind it
        manifest["decoder_precision"] = lowered.stats["decoder_precision"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(data)
    write_vocab(out_dir, source)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out_dir / "report.txt").write_text(report_text(manifest))
    w = manifest["weights"]
    lo = manifest["lowering"]
    summary = (f"onnx: model.onnx {len(data) / 2 ** 20:.2f} MiB, weights nnz {w['nnz']:,} of {w['dense']:,}"
               + (f" (density {w['density']:.3f}){_rnn_part(w, 3)}" if w["density"] is not None else "")
               + f"; {lo['event_gated_matvecs']} event-gated + {lo['dense_matvecs']} dense matvecs"
               + ("; embedding folded into layer 0" if lo["folded_embedding"] else "")
               + f"; ai.egru ops: {', '.join(manifest['onnx']['functions'])}")
    if lowered.stats.get("decoder_precision"):
        summary += "\n" + lowered.stats["decoder_precision"]["note"]
    return {"summary": summary, "manifest": manifest}
