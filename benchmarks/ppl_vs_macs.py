"""PTB test perplexity vs dynamic MACs/token across pruning levels, EGRU vs a dense RNN baseline.

    python -m benchmarks.ppl_vs_macs --data data/ptb \
        --egru examples/ptb-egru-small/run/ckpts/dense.pt examples/ptb-egru-small/run/ckpts/sparsity_50.pt ... \
        --baseline examples/ptb-egru-small/run/gru.pt --png ppl_vs_macs.png --json ppl_vs_macs.json

MACs count RNN layers only (embedding lookup and decoder excluded; see egru_compile.train.metrics):
EGRU = event-driven dynamic MACs/token (non-zero fan-out of active inputs, embedding input fully active);
dense baseline = its static MACs/token (every weight, every step). The reference for the reduction factor is
the static dense MACs of a GRU of the EGRU's size, sum over layers of (in + h) * 3h.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "data" / "ptb"),
                    help="directory with ptb.{train,valid,test}.txt (default: the repository's data/ptb)")
    ap.add_argument("--egru", nargs="+", default=[], help="EGRU project checkpoints (any pruning levels)")
    ap.add_argument("--baseline", nargs="*", default=[], help="dense GRU/LSTM baseline checkpoints")
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--batch-size", type=int, default=1, help="evaluation streams (1 = AWD test convention)")
    ap.add_argument("--max-tokens", type=int, default=None, help="evaluate only the first N tokens (quick look)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--png", default="ppl_vs_macs.png")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)

    import torch

    from egru_compile.train.data import find_split
    from egru_compile.train.metrics import measure_activity_and_macs
    from egru_compile.train.evaluation import evaluate
    from egru_compile.train.checkpoints import load_any
    torch.set_num_threads(args.threads)

    rows = []
    vocab = None
    for kind, paths in (("egru", args.egru), ("baseline", args.baseline)):
        for p in paths:
            model, v, meta = load_any(p)
            vocab = vocab or v
            tokens = torch.from_numpy(v.encode_file(find_split(args.data, args.split), max_tokens=args.max_tokens))
            t0 = time.time()
            if kind == "egru":
                from egru_compile.train.prune import masked_fraction
                m = measure_activity_and_macs(model, tokens, batch_size=args.batch_size)
                row = {"model": f"EGRU {round(masked_fraction(model) * 100)}% pruned", "path": p,
                       "sparsity": masked_fraction(model), "ppl": m["ppl"], "activity": m["activity"],
                       "macs_per_token": m["dynamic_macs_per_token"], "static_dense_macs": m["static_dense_macs"],
                       "nonzero_weights": m["nonzero_weights"], "tokens": m["tokens"]}
            else:
                r = evaluate(model, tokens, args.batch_size, local=True)
                row = {"model": f"dense {model.config.cell.upper()}", "path": p, "sparsity": 0.0, "ppl": r["ppl"],
                       "activity": r["activity"], "macs_per_token": r["dynamic_macs_per_token"],
                       "static_dense_macs": r["static_dense_macs"],
                       "nonzero_weights": r["static_dense_macs"], "tokens": r["tokens"]}
            row["eval_s"] = time.time() - t0
            row["train_epochs_meta"] = meta.get("train_config", {}).get("epochs")
            rows.append(row)
            print(f"evaluated {p} in {row['eval_s']:.0f} s", file=sys.stderr)
    if not rows:
        ap.error("give --egru and/or --baseline checkpoints")
    ref = next((r["static_dense_macs"] for r in rows if r["model"].startswith("EGRU")), rows[0]["static_dense_macs"])
    hdr = f"| model | weight sparsity | {args.split} ppl | activity per layer | MACs/token | reduction vs dense GRU |"
    print(hdr)
    print("|" + "---|" * 6)
    for r in rows:
        r["reduction"] = ref / r["macs_per_token"]
        print(f"| {r['model']} | {r['sparsity']:.1%} | {r['ppl']:.2f} | "
              + "/".join(f"{a:.3f}" for a in r["activity"])
              + f" | {r['macs_per_token']:,.0f} | {r['reduction']:.1f}x |")
    print(f"\n(dense GRU static MACs/token of this size: {ref:,}; {args.split} split, {rows[0]['tokens']} tokens, "
          f"batch {args.batch_size})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    eg = [r for r in rows if r["model"].startswith("EGRU")]
    if eg:
        ax.plot([r["macs_per_token"] for r in eg], [r["ppl"] for r in eg], "o-", label="EGRU (pruning levels)")
        for r in eg:
            ax.annotate(f"{r['sparsity']:.0%}", (r["macs_per_token"], r["ppl"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    for r in rows:
        if not r["model"].startswith("EGRU"):
            ax.plot([r["macs_per_token"]], [r["ppl"]], "s", label=r["model"])
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("RNN MACs per token (EGRU: dynamic, event-driven)")
    ax.set_ylabel(f"PTB {args.split} perplexity")
    ax.set_title("PTB: perplexity vs RNN MACs/token (emb 128, hidden 256,128)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"wrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
