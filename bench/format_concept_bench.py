"""Markdown table of bench/run_concept_bench.sh: per concept, identity alone vs in the 5-way merge."""
import json
import os
import sys

out = sys.argv[1]
print("| kind | concept | cosine alone | cosine merged | kept | probe acc alone | probe acc merged |")
print("|---|---|---|---|---|---|---|")
for kind in ("ortho_lora", "lora"):
    merged = json.load(open(os.path.join(out, "merge-" + kind, "metrics.json")))
    kept = []
    for entry in merged["concepts"]:
        name = entry["concept"]
        alone = json.load(open(os.path.join(out, kind + "-" + name, "metrics.json")))
        ratio = entry["feature_cosine"] / alone["feature_cosine"]
        kept.append(ratio)
        print("| {} | {} | {:.3f} | {:.3f} | {:.0%} | {:.0%} | {:.0%} |".format(
            kind, name, alone["feature_cosine"], entry["feature_cosine"], ratio,
            alone.get("probe_accuracy", float("nan")), entry.get("probe_accuracy", float("nan"))))
    print("| {} | **mean** | | | **{:.0%}** | | |".format(kind, sum(kept) / len(kept)))
    print("| {} | merge time | {:.3f} s | | | | |".format(kind, merged["merge_seconds"]))
