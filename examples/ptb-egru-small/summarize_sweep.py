"""Print a weight-decay sweep (sweep_wd.sh -> sweep/, sweep_wd85.sh -> sweep85/) as a markdown table from each
run's train_log.csv: the last trained epoch (its weight sparsity, valid ppl, activity, dynamic MACs/token and
the reduction vs the dense GRU static MACs) and, when the run pruned after training, the one-shot pruned numbers."""
import csv
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "sweep")
print("| weight decay | act-reg | sparsity | valid ppl | activity l0 / l1 | MACs/token | reduction "
      "| one-shot pruned after training: sparsity, valid ppl, MACs/token, reduction |")
print("|---|---|---|---|---|---|---|---|")
for d in sorted(root.iterdir(), key=lambda p: (p.name.split("_ar")[1] if "_ar" in p.name else "",
                                                float(p.name[2:].split("_")[0]) if p.name.startswith("wd") else 0)):
    rows = list(csv.DictReader(open(d / "train_log.csv"))) if (d / "train_log.csv").exists() else []
    ep = [(i, r) for i, r in enumerate(rows) if r["kind"] == "epoch"]
    if not ep:
        continue
    i, e = ep[-1]
    after = [r for r in rows[i + 1:] if r["kind"] == "pruned"]
    wd, ar = d.name.replace("wd", "").split("_ar")
    extra = "-"
    if after:
        p = after[-1]
        extra = (f"{float(p['sparsity']):.0%}, {float(p['valid_ppl']):.0f}, {float(p['dynamic_macs_per_token']):,.0f}, "
                 f"{float(p['macs_reduction']):.1f}x")
    print(f"| {wd} | {ar} | {float(e['sparsity']):.0%} | {float(e['valid_ppl']):.0f} | "
          f"{float(e['activity_0']):.3f} / {float(e['activity_1']):.3f} | {float(e['dynamic_macs_per_token']):,.0f} | "
          f"{float(e['macs_reduction']):.1f}x | {extra} |")
