"""ONNX target: an IR step graph -> ``model.onnx`` runnable by stock onnxruntime (batch-1 streaming step).

Compiler ops live in the custom domain ``ai.egru`` as model-local functions built from standard ops (see
`functions`); weights are stored as CSR initializers and expanded at load time; products of event tensors
gather only the active units' weight rows. Output directory::

    model.onnx      the step: tokens, c{l}, y{l} -> logits, c{l}_out, y{l}_out, events{l}, macs
    manifest.json   target "onnx", I/O names/shapes/roles, options, source checksum, weight statistics
    report.txt      human-readable summary (shown by ``egru-compile inspect DIR``)
    vocab.txt       one word per line in id order (when the source has a vocabulary)

Run it with `egru_compile.runtime.open_artifact(dir)`. Batched streams (``eval --batch-size B``,
``Runner.score_streams``): the runner derives the symbolic-B form of ``model.onnx`` in memory
(`batch.batch_model`: per-stream event gating, bit-exact per stream against batch 1); ``batch_model`` is
public to export it.
"""
from .batch import batch_model
from .compile import MANIFEST_FORMAT, build_manifest, compile_onnx, report_text, serialize
from .functions import DOMAIN, OP_NAMES, OPSET
from .lower import lower_graph
from .options import Lowered, OnnxLoweringError, OnnxOptions
from .pipeline import ONNX_PIPELINE_NEEDS, prepare_graph

__all__ = ["compile_onnx", "lower_graph", "serialize", "report_text", "build_manifest", "Lowered", "OnnxOptions",
           "OnnxLoweringError", "DOMAIN", "OP_NAMES", "OPSET", "MANIFEST_FORMAT", "ONNX_PIPELINE_NEEDS",
           "prepare_graph", "batch_model"]
