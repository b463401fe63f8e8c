"""`--target tvm`: lower the optimised IR to the TIR step kernels and export a shared library.

Output directory::

    manifest.json   target, spec (sizes, index dtype, kernel options), I/O, source checksum, host CPU
    egru_step.so    compiled `egru_step` (one token per call) and `egru_run` (K tokens per call)
    weights.npz     the stack's sparse weights (input-major CSR, float32) the runner packs at load time
    vocab.txt       vocabulary (when the source has one)

The runner (`runner.py`) loads the .so without recompiling; the batched-stream kernels (``eval --batch-size``
B > 1) are not in it (they would double the compile time): the runner compiles them in a library of their own on
its first B-stream call, through the compile cache (`cache.py`), so later runs copy them. The value dtypes the kernels read are chosen by
`precision.py` (``--weight-dtype``, ``--decoder-dtype``): int8 layers store quantize-int8's int8 values and
per-output scales (``l{l}_W_scale`` / ``l{l}_R_scale``), otherwise float32 values (int8 ones dequantized; f16 is
converted by the runner); the decoder is stored float32 and quantized / converted by the runner as the spec says.
"""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np

from ...errors import EgruError, UsageError
from ...ir.sparse import part_arrays, read_parts
from ..output import write_vocab
from ..stack import EGRUStack, extract_stack

LIBRARY = "egru_step.so"
WEIGHTS = "weights.npz"


def stack_layer_arrays(stack: EGRUStack, int8: bool = False) -> list[dict]:
    """Per layer: W/R as input-major CSR triples (indptr, indices, data) of the kernel layout [n_in, 3h];
    with `int8` (the matrices must be quantize-int8's) the int8 data and ``W_scale`` / ``R_scale`` [3h]."""
    layers = []
    for lw in stack.layers:
        entry = {"b": lw.b.astype(np.float32), "br": lw.br.astype(np.float32), "thr": lw.thr.astype(np.float32)}
        for name, m in (("W", lw.W), ("R", lw.R)):
            csc = m.convert("csc")     # columns = input units = kernel rows (self when already csc)
            data = np.asarray(csc.data, np.int8) if int8 else csc.dequantized_values().astype(np.float32)
            entry[name] = (csc.indptr.astype(np.int32), csc.indices.astype(np.int32), data)
            if int8:
                entry[f"{name}_scale"] = np.asarray(m.scale, np.float32)
        layers.append(entry)
    return layers


def save_weights(path: Path, stack: EGRUStack, int8: bool = False) -> None:
    arrays = {"embedding": stack.embedding, "decoder_weight": stack.decoder_weight,
              "decoder_bias": stack.decoder_bias, "n_layers": np.array(len(stack.layers))}
    for l, entry in enumerate(stack_layer_arrays(stack, int8)):
        for k in ("b", "br", "thr"):
            if k in entry:
                arrays[f"l{l}_{k}"] = entry[k]
        for k in ("W", "R"):
            indptr, indices, data = entry[k]
            arrays.update(part_arrays(f"l{l}_{k}", indptr=indptr, indices=indices, data=data,
                                      scale=entry.get(f"{k}_scale")))
    if stack.projection is not None:       # P [E, h_last] as input-major CSR (columns = last-layer units)
        csc = stack.projection.convert("csc")
        arrays.update(part_arrays("projection", indptr=csc.indptr.astype(np.int32),
                                  indices=csc.indices.astype(np.int32),
                                  data=csc.dequantized_values().astype(np.float32)),
                      projection_bias=np.asarray(stack.projection_bias, np.float32))
    tied = np.array_equal(stack.embedding, stack.decoder_weight)
    if tied:
        del arrays["decoder_weight"]
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_weights(path: Path, data: bytes | None = None):
    """(embedding, layers, decoder weight, decoder bias, projection) of a weights.npz written by
    :func:`save_weights` (projection: None, or ((indptr, indices, data), bias) of EvNN's decoder projection);
    a missing, corrupt or incomplete file is an ArtifactError. `data`: the file's bytes, already read and
    checked (`artifact.read_verified`), used instead of reading `path` again."""
    import io

    from ...fsio import BoundedNpz, FileError
    from ...artifact import ArtifactError
    src = io.BytesIO(data) if data is not None else path
    try:     # an artifact's npz is stored uncompressed: its arrays can never inflate past the file's own size
        with BoundedNpz(src, len(data) if data is not None else Path(path).stat().st_size, path) as z:
            emb = z["embedding"]
            layers = []
            for l in range(int(z["n_layers"])):
                entry = {k: z[f"l{l}_{k}"] for k in ("b", "br", "thr")}
                for k in ("W", "R"):
                    parts = read_parts(z, f"l{l}_{k}")
                    entry[k] = (parts["indptr"], parts["indices"], parts["data"])
                    if "scale" in parts:
                        entry[f"{k}_scale"] = parts["scale"]
                layers.append(entry)
            dec_w = z["decoder_weight"] if "decoder_weight" in z else emb
            dec_b = z["decoder_bias"]
            proj = None
            if "projection_indptr" in z:
                parts = read_parts(z, "projection")
                proj = ((parts["indptr"], parts["indices"], parts["data"]), z["projection_bias"])
    except FileError as e:
        raise ArtifactError(str(e)) from None
    except KeyError as e:
        raise ArtifactError(f"{path} is incomplete: no array {e.args[0].split()[0] if e.args else e}") from None
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as e:
        text = str(e).strip().splitlines()
        raise ArtifactError(f"{path} is unreadable: {text[0] if text else type(e).__name__}") from None
    if not layers:
        raise ArtifactError(f"{path} has no layers")
    _check_content(path, emb, layers, dec_w, dec_b, proj)
    return emb, layers, dec_w, dec_b, proj


def _check_content(path, emb, layers, dec_w, dec_b, proj) -> None:
    """The arrays of weights.npz through the content validator every runner's weights go through
    (`ir.content`): a resealed file with NaN, Inf, complex or overflowing weights is refused."""
    from ...ir import SparseMatrix
    from ...ir.content import ContentError, check_array, check_stack
    from ...artifact import ArtifactError

    def matrix(name, triple, n_out, scale=None):
        p, i, d = (check_array(x, f"{path}: {name}_{part}", kind=kind, ndim=1)
                   for x, part, kind in zip(triple, ("indptr", "indices", "data"), ("index", "index", "any")))
        if len(p) < 1:
            raise ContentError(f"{path}: {name}_indptr is empty")
        try:
            return SparseMatrix((n_out, len(p) - 1), "csc", p, i, d, scale)
        except (ValueError, IndexError) as e:
            raise ContentError(f"{path}: {name}: {e}") from None
    try:
        checked = []
        for l, L in enumerate(layers):
            b = check_array(L["b"], f"{path}: l{l}_b", kind="float", ndim=1)
            entry = {"b": b, "br": L["br"], "thr": L["thr"]}
            for k in ("W", "R"):
                entry[k] = matrix(f"l{l}_{k}", L[k], len(b), L.get(f"{k}_scale"))
            checked.append(entry)
        P = pb = None
        if proj is not None:
            pb = check_array(proj[1], f"{path}: projection_bias", kind="float", ndim=1)
            P = matrix("projection", proj[0], len(pb))
        check_stack(str(path), emb, checked, dec_w, dec_b, P, pb)
    except ContentError as e:
        raise ArtifactError(str(e)) from None


def _projection_macs(graph) -> dict | None:
    """count-macs' entry for EvNN's decoder projection (None without one or without the analysis)."""
    from ...passes import MacReport
    rep = graph.analyses.get(MacReport)
    return rep.to_json().get("projection") if rep else None


def _projection_words(stack) -> str:
    if stack.projection is None:
        return ""
    if stack.projection_activation == "relu":
        return " after an event-driven projection with relu (EvNN 2023), over its non-zeros"
    return "; the projection (event-driven, identity: EvNN >= 0.2.0) feeds it graded values, read densely"


def embedding_fold(graph, stack: EGRUStack, options: dict, int8: bool) -> dict:
    """Whether layer 0's input product is folded with the embedding (``embed_mode`` "table"), decided by the
    fold-embedding pass with the target's ``fold_embedding`` / ``fold_max_mb`` options (the onnx target's
    rule); the manifest's record of it. The graph is not changed."""
    from ...passes.fold_embedding import FOLD_MAX_MB, fold_mode, products_to_fold, table_mib
    try:
        mode = fold_mode(options.get("fold_embedding"))
    except ValueError as e:
        raise EgruError(f"tvm {e}") from None
    max_mb = float(options["fold_max_mb"]) if options.get("fold_max_mb") is not None else FOLD_MAX_MB
    if not max_mb >= 0:                    # NaN or negative (click's FloatRange lets NaN through)
        raise UsageError(f"--fold-max-mb {max_mb}: expected a number >= 0")
    folded = any(n.attrs.get("layer") == 0 and n.attrs.get("role") == "input"
                 for n in products_to_fold(graph, mode, max_mb))   # the spec's embed_mode; the graph unchanged
    if mode is True and not folded:
        raise EgruError("--fold-embedding on: layer 0's input product is not foldable with the embedding")
    V, n_out = stack.vocab_size, 3 * stack.hidden_sizes[0]
    mib = table_mib(V, n_out)
    why = {True: "--fold-embedding on", False: "--fold-embedding off"}.get(
        mode, f"auto: {mib:,.1f} MiB {'<=' if folded else '>'} --fold-max-mb {max_mb:g}")
    what = ("E @ W0's integer values (the int8 scale and the bias come after the sum)" if int8 else
            "E @ W0 + layer 0's z, r, g_x bias")
    return {"folded": folded, "table_shape": [V, n_out], "dtype": "float32", "table_mib": round(mib, 3),
            "why": why, "values": what + ", computed in float64 and rounded to float32 once, at load time",
            "note": (f"embedding folded into layer 0's input product: a [{V}, {n_out}] float32 table of "
                     f"{mib:,.1f} MiB built at load time (memory the runner holds), one row read per token ({why})"
                     if folded else f"embedding not folded ({why}; the table would be {mib:,.1f} MiB): layer 0 "
                     "multiplies the embedding row by its input matrix every token")}


def _u8_rows_mib(spec) -> float:
    """Memory of the dense int8 rows the uint8 event products read (the kernel arguments `*_rows`, and the
    decoder's ``dwt`` when it reads uint8 events; the runner builds them at load time)."""
    from .signature import kernel_params
    return sum(int(np.prod(shape)) for name, shape, _ in kernel_params(spec, "step")
               if name.endswith("_rows") or (name == "dwt" and spec.u8_decoder)) / 2 ** 20


def compile_tvm(graph, source, out_dir, options: dict) -> dict:
    try:
        import tvm  # noqa: F401
    except ModuleNotFoundError:
        raise EgruError("target tvm needs Apache TVM: pip install apache-tvm==0.27.0.post1") from None
    from .precision import decoder_precision, event_precision, resolve_event_dtype, resolve_weight_dtype
    from .spec import EGRUKernelSpec, default_target
    from .cache import step_library
    out_dir = Path(out_dir)
    stack = extract_stack(graph)
    wdt = resolve_weight_dtype(stack, options.get("weight_dtype"))
    ddt, dec_record = decoder_precision(graph, stack, wdt, options.get("decoder_dtype"),
                                        options.get("calib_token_ids"), options.get("perplexity"))
    edt = resolve_event_dtype(options.get("event_dtype"), wdt, default_target())
    fold = embedding_fold(graph, stack, options, wdt == "int8")
    t0 = time.perf_counter()
    spec = EGRUKernelSpec(stack.vocab_size, stack.embedding.shape[1], tuple(stack.hidden_sizes),
                          embed_mode="table" if fold["folded"] else "csc",
                          projection=stack.projection is not None, weight_dtype=wdt, decoder_dtype=ddt,
                          projection_activation=stack.projection_activation or "identity", event_dtype=edt)
    # weights packed by the runner; the batched-stream kernels (eval --batch-size) are compiled in a library
    # of their own on first use, through the compile cache (cache.load_streams_module)
    cached = step_library(spec, out_dir / LIBRARY)
    compile_s = time.perf_counter() - t0
    ev_record = {"note": "event values f32"}
    if spec.u8_events:
        from .library import load_module
        ev_record = event_precision(spec, load_module(str(out_dir / LIBRARY)), stack,
                                    stack_layer_arrays(stack, int8=True), options.get("calib_token_ids"))
    save_weights(out_dir / WEIGHTS, stack, int8=wdt == "int8")
    vocab_file = write_vocab(out_dir, source)
    tgt = default_target()
    functions = {"egru_step": "one token per call", "egru_run": "K tokens per call",
                 "egru_score": "K tokens per call, NLL of the next token computed in the library"}
    from .shared import supports_shared
    if supports_shared(spec):
        functions.update(egru_shared_run="T steps of B streams per call, each active column read once for all "
                                         "the streams (own library, compiled on first use)",
                         egru_shared_score="the same with the NLL per stream (own library, compiled on first use)")
    elif not spec.projection and spec.decoder_mode == "event" and not spec.u8_events:
        functions.update(egru_streams_run="T steps of B streams per call (own library, compiled on first use)",
                         egru_streams_score="T steps of B streams per call, NLL per stream (own library, "
                                            "compiled on first use)")
    manifest = {"target": "tvm", "format": "egru-compile/tvm-step", "version": 1, "library": LIBRARY,
                "weights": WEIGHTS, "spec": spec.to_dict(), "llvm_target": str(tgt),
                "hidden_sizes": stack.hidden_sizes, "vocab_size": stack.vocab_size, "vocab": vocab_file,
                "source_sha256": getattr(source, "sha256", None),
                "functions": functions,
                "options": {k: options.get(k) for k in ("passes", "calib_data", "calib_tokens", "fold_embedding",
                                                         "fold_max_mb")},
                "folded_embedding": {k: v for k, v in fold.items() if k != "note"},
                "projection": _projection_macs(graph), "decoder_precision": dec_record,
                "event_precision": ev_record,
                "projection_activation": stack.projection_activation}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
    idts = "/".join(dict.fromkeys(spec.layer_index_dtype(l) for l in range(len(stack.layers))))
    summary = (f"tvm: {len(stack.layers)} layers {stack.hidden_sizes}, {wdt} weight values"
               f"{', uint8 event values' if spec.u8_events else ''}, {idts} indices, "
               f"decoder {spec.decoder_mode}"
               f"{_projection_words(stack)}; "
               f"kernels {'copied from the compile cache' if cached else 'compiled'} in {compile_s:.1f} s for {tgt}\n"
               f"{fold['note']}\n{dec_record['note']}"
               + (f"\n{ev_record['note']}; dense int8 rows for the uint8 event products: "
                  f"{_u8_rows_mib(spec):,.1f} MiB" if spec.u8_events else ""))
    (out_dir / "report.txt").write_text(summary + "\n")
    return {"summary": summary}
