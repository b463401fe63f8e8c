"""Test perplexity of a trained EGRU language model with int8 weights and 8-bit quantized activations (events).

    python -m benchmarks.w8a8_accuracy [--checkpoint examples/ptb-egru-small/model.pt]
        [--data data/ptb/ptb.test.txt] [--max-tokens N] [--jobs J]

A plain float32 NumPy implementation of the EGRU equations (egru_compile.model.egru), batch 1, streaming over
the text with `egru-compile eval`'s protocol (zero state once at the start, state carried through the whole
text, the logits after token t score token t+1). Pruning masks are applied (weight = orig * mask); the
log-softmax is computed in float64. Variants:

* ``f32``: the checkpoint's weights as they are (must match `egru-compile eval` of the checkpoint).
* ``w8``: the kernels W, recurrent kernels R and the tied decoder E as the project's int8 pass quantizes them
  (`egru_compile.passes.quantize.quantize_matrix`): symmetric per output unit (each of the 3h columns of W and
  R, each vocabulary row of E), scale = max|w| / 127, q = rint(w / scale) clipped to [-127, 127]; the
  dequantized values q * scale are used in float math. Activations float.
* ``w8a8-dyn``: as ``w8``, plus every layer's output events y quantized to uint8 before they enter a matrix
  product (the next layer's W, the layer's own R on the next step, the decoder): per step and tensor,
  scale = max(y) / 255, yq = rint(y / scale) (all-zero y stays zero), used as yq * scale. The embedding input
  of layer 0 stays float (a precomputed table E @ W0 + b0). The state c and the y in the cell equations
  (c~ = z c + (1 - z) g ...) stay float: only matrix-product inputs are quantized.
* ``w8a8-static``: as ``w8a8-dyn`` with the fixed scale 1/255 (y lies in (0, 1): c < 1 always).
* ``w8a16-dyn``: as ``w8a8-dyn`` with 16-bit codes (scale = max(y) / 32767): what is left is the weights' loss.
* ``a8-dyn``: float weights, activations as ``w8a8-dyn``: the activations' loss alone.

Reported per variant: perplexity, its relative change vs ``f32``, activity per layer (share of units with
y != 0, of the float y), the share of non-zero y whose code rounds to 0 (events the matrix products lose),
and the largest y seen. Variants run in parallel processes (``--jobs``, default: all cores).
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: logits rows per decoder matrix product
DECODE_CHUNK = 2048


@dataclass(frozen=True)
class Variant:
    name: str
    int8_weights: bool
    act_levels: int | None = None   # largest activation code (255: uint8, 32767: 16-bit); None: float activations
    static_scale: bool = False      # scale 1 / act_levels (y in (0, 1)) instead of max(y) / act_levels per step


VARIANTS = (
    Variant("f32", int8_weights=False),
    Variant("w8", int8_weights=True),
    Variant("w8a8-dyn", int8_weights=True, act_levels=255),
    Variant("w8a8-static", int8_weights=True, act_levels=255, static_scale=True),
    Variant("w8a16-dyn", int8_weights=True, act_levels=32767),
    Variant("a8-dyn", int8_weights=False, act_levels=255),
)


def quantize_int8(w: np.ndarray, axis: int) -> np.ndarray:
    """Dequantized symmetric int8 of `w`, one scale per slice along `axis` (the reduced axis: the inputs of
    an output unit), as `egru_compile.passes.quantize.quantize_matrix` computes it."""
    w = w.astype(np.float32)
    scale = (np.abs(w).max(axis=axis, keepdims=True) / np.float32(127.0)).astype(np.float32)
    scale[scale == 0] = 1.0
    return (np.clip(np.rint(w / scale), -127, 127) * scale).astype(np.float32)


def load_weights(checkpoint: str) -> dict:
    """The float32 weights of a project checkpoint or EvNN state_dict, pruning masks applied (orig * mask),
    thresholds clamped to [0, 1], plus its vocabulary."""
    import torch

    from egru_compile.frontend.checkpoint import load_source
    source = load_source(checkpoint)
    model = source.model
    if model.config.projection:
        sys.exit(f"{checkpoint}: a decoder projection is not supported by this benchmark")

    def weight(module, name: str) -> np.ndarray:
        if hasattr(module, name + "_mask"):
            w = getattr(module, name + "_orig") * getattr(module, name + "_mask")
        else:
            w = getattr(module, name)
        return w.detach().numpy().astype(np.float32)

    with torch.no_grad():
        layers = [{"W": weight(layer, "kernel"), "R": weight(layer, "recurrent_kernel"),
                   "b": layer.bias.numpy().copy(), "br": layer.recurrent_bias.numpy().copy(),
                   "thr": layer.thr.clamp(0.0, 1.0).numpy().copy()} for layer in model.rnns]
        return {"embedding": model.embeddings.weight.numpy().copy(), "layers": layers,
                "decoder_weight": weight(model.decoder.decoder, "weight"),
                "decoder_bias": model.decoder.decoder.bias.numpy().copy(), "vocab": source.vocab}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class EventQuantizer:
    """Unsigned fake-quantization of event vectors y >= 0, with counts of the events it zeroes."""

    def __init__(self, variant: Variant, n_layers: int):
        self.levels = variant.act_levels
        self.static_scale = variant.static_scale
        self.events = np.zeros(n_layers, np.int64)        # non-zero y seen per layer
        self.zeroed = np.zeros(n_layers, np.int64)        # of those, rounded to code 0
        self.max_y = 0.0

    def __call__(self, y: np.ndarray, layer: int) -> np.ndarray:
        top = float(y.max())
        self.max_y = max(self.max_y, top)
        if self.levels is None or top == 0.0:
            return y
        scale = np.float32(1.0 / self.levels if self.static_scale else top / self.levels)
        codes = np.clip(np.rint(y / scale), 0, self.levels)
        self.zeroed[layer] += int(np.count_nonzero((codes == 0) & (y != 0)))
        return (codes * scale).astype(np.float32)


def run_variant(variant: Variant, weights: dict, tokens: np.ndarray) -> dict:
    """Stream `tokens` through the model in `variant`'s precision: perplexity and per-layer statistics."""
    layers = weights["layers"]
    if variant.int8_weights:
        layers = [dict(p, W=quantize_int8(p["W"], axis=0), R=quantize_int8(p["R"], axis=0)) for p in layers]
        decoder_weight = quantize_int8(weights["decoder_weight"], axis=1)
    else:
        decoder_weight = weights["decoder_weight"]
    input_table = weights["embedding"] @ layers[0]["W"] + layers[0]["b"]   # layer 0's x @ W0 + b0 per token
    sizes = [p["thr"].shape[0] for p in layers]
    quantize = EventQuantizer(variant, len(layers))
    cells = [np.zeros(h, np.float32) for h in sizes]
    inputs_fed_back = [np.zeros(h, np.float32) for h in sizes]   # each layer's quantized y of the previous step
    steps = len(tokens) - 1
    decoder_inputs = np.empty((steps, sizes[-1]), np.float32)
    t0 = time.perf_counter()
    for t in range(steps):
        gx = input_table[tokens[t]]
        for l, (p, h) in enumerate(zip(layers, sizes)):
            if l > 0:
                gx = x_quantized @ p["W"] + p["b"]
            gh = inputs_fed_back[l] @ p["R"] + p["br"]
            z = sigmoid(gx[:h] + gh[:h])
            r = sigmoid(gx[h:2 * h] + gh[h:2 * h])
            g = np.tanh(gx[2 * h:] + r * gh[2 * h:])
            c_tilde = z * cells[l] + (1.0 - z) * g
            fired = c_tilde > p["thr"]
            y = np.where(fired, c_tilde, np.float32(0.0))
            cells[l] = c_tilde - np.where(fired, p["thr"], np.float32(0.0))
            quantize.events[l] += int(np.count_nonzero(fired))
            x_quantized = quantize(y, l)
            inputs_fed_back[l] = x_quantized
        decoder_inputs[t] = x_quantized
    nll = 0.0
    for start in range(0, steps, DECODE_CHUNK):
        logits = (decoder_inputs[start:start + DECODE_CHUNK] @ decoder_weight.T + weights["decoder_bias"])
        logits = logits.astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        targets = tokens[start + 1:start + 1 + len(logits)]
        nll += float((log_z - logits[np.arange(len(logits)), targets]).sum())
    return {"variant": variant.name, "tokens": steps, "perplexity": math.exp(nll / steps),
            "activity": [int(e) / (steps * h) for e, h in zip(quantize.events, sizes)],
            "zeroed_share": [int(zr) / int(e) if e else 0.0 for zr, e in zip(quantize.zeroed, quantize.events)],
            "max_y": quantize.max_y, "seconds": time.perf_counter() - t0}


def markdown_table(results: list[dict], quantized: set[str]) -> str:
    reference = next(r["perplexity"] for r in results if r["variant"] == "f32")
    lines = ["| variant | perplexity | Δ vs f32 | activity per layer | non-zero y quantized to 0, per layer "
             "| max y |",
             "|---|---:|---:|---|---|---:|"]
    for r in results:
        delta = r["perplexity"] / reference - 1.0
        zeroed = " / ".join(f"{z:.2%}" for z in r["zeroed_share"]) if r["variant"] in quantized else "–"
        lines.append(f"| {r['variant']} | {r['perplexity']:.4f} | {delta:+.4%} | "
                     f"{' / '.join(f'{a:.4f}' for a in r['activity'])} | {zeroed} | {r['max_y']:.8f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "examples" / "ptb-egru-small" / "model.pt"))
    ap.add_argument("--data", default=str(ROOT / "data" / "ptb" / "ptb.test.txt"), help="text to evaluate on")
    ap.add_argument("--train", default=str(ROOT / "data" / "ptb" / "ptb.train.txt"),
                    help="training text giving the vocabulary when the checkpoint holds none")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="evaluate only the first N tokens (default: the whole text; PTB test: 82,430)")
    ap.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS],
                    choices=[v.name for v in VARIANTS], help="variants to run (f32 is always run)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="variants run in parallel")
    args = ap.parse_args(argv)

    from egru_compile.data import Vocabulary
    from egru_compile.runtime.evaluate import load_eval_tokens

    weights = load_weights(args.checkpoint)
    vocab = weights.pop("vocab") or Vocabulary.from_train_file(args.train)
    tokens = load_eval_tokens(args.data, vocab, args.max_tokens)
    variants = [v for v in VARIANTS if v.name == "f32" or v.name in args.variants]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(variants)))) as pool:
        results = list(pool.map(run_variant, variants, [weights] * len(variants), [tokens] * len(variants)))
    wall = time.perf_counter() - t0

    print("command:", shlex.join(["python", "-m", "benchmarks.w8a8_accuracy",
                                  *(argv if argv is not None else sys.argv[1:])]))
    print(f"checkpoint {args.checkpoint}, {args.data}: {results[0]['tokens']:,} predictions, "
          f"layers {[p['thr'].shape[0] for p in weights['layers']]}, float32 math, float64 log-softmax\n")
    print(markdown_table(results, {v.name for v in variants if v.act_levels is not None}))
    per_variant = ", ".join(f"{r['variant']} {r['seconds']:.1f} s" for r in results)
    print(f"\n{wall:.1f} s wall for {len(variants)} variants on {min(args.jobs, len(variants))} processes "
          f"({per_variant})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
