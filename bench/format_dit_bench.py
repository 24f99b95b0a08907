"""Prints the rows of bench/run_dit_bench.sh: each JSON line given, then the Atelier / diffusers ratios."""
import json
import sys

rows = [json.loads(a) for a in sys.argv[1:]]
for d in rows:
    print(f"{d['preset']:<8} {d['impl']:<10} {d['train_img_per_s']:>14} {d['sample_img_per_s']:>14} {d['peak_rss_mb']:>10}")
a, r = rows
print(f"{a['preset']:<8} {'ratio':<10} {a['train_img_per_s'] / r['train_img_per_s']:>14.2f} "
      f"{a['sample_img_per_s'] / r['sample_img_per_s']:>14.2f} {a['peak_rss_mb'] / r['peak_rss_mb']:>10.2f}")
