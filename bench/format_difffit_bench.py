"""Markdown table of `difffit` job metrics.json files (bench/run_difffit_bench.sh), full fine-tuning first.

steps/s counts the whole training step; compute steps/s leaves out rendering the Shapes batch (the same
work for every method, which a data loader would overlap with the network)."""
import json
import os
import sys

def load(path):
    """metrics.json with the method named as the table shows it (LoRA with its rank, from config.json)."""
    r = json.load(open(path))
    config = os.path.join(os.path.dirname(path), "config.json")
    if r["method"] == "lora" and os.path.exists(config):
        r["method"] = "lora-r{}".format(json.load(open(config))["lora_rank"])
    return r


rows = [load(path) for path in sys.argv[1:]]
full = next((r for r in rows if r["method"] == "full"), rows[0])
print("| method | trainable | fraction | adapter MB | steps/s | vs full | compute steps/s | vs full | "
      "peak RSS MB | FD before | FD after | vs full FD | probe acc after |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| {method} | {trainable_parameters:,} | {frac:.3f}% | {mb:.2f} | {sps:.2f} | {speed:.2f}x | "
          "{csps:.2f} | {cspeed:.2f}x | {rss:.0f} | {fdb:.1f} | {fda:.1f} | {fdr:+.1f}% | {acc:.1%} |".format(
              frac=100 * r["trainable_fraction"], mb=r["adapter_bytes"] / 1e6, sps=r["steps_per_second"],
              speed=r["steps_per_second"] / full["steps_per_second"], csps=r["compute_steps_per_second"],
              cspeed=r["compute_steps_per_second"] / full["compute_steps_per_second"], rss=r["peak_rss_mb"],
              fdb=r["before"]["fd_shapes"], fda=r["after"]["fd_shapes"],
              fdr=100 * (r["after"]["fd_shapes"] / full["after"]["fd_shapes"] - 1),
              acc=r["after"]["probe_accuracy"], **r))
