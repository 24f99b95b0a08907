"""Markdown tables of a bench/run_distill_bench.sh folder: the student against its teacher (when the
folder holds a distill_steps run), then naive fine-tuning against PSO at each step count."""
import json
import os
import sys

out = sys.argv[1]
student = os.path.join(out, "student", "metrics.json")
if os.path.exists(student):
    m = json.load(open(student))
    t = m["teacher"]
    print("| model | steps | probe accuracy | vs teacher | FD-shapes | vs teacher | sharpness | s/image | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("| teacher (DDIM, cfg) | {} | {:.1%} | 1.00 | {:.1f} | 1.00x | {:.0f} | {:.4f} | 1x |".format(
        json.load(open(os.path.join(out, "student", "config.json")))["teacher_steps"], t["probe_accuracy"],
        t["fd_shapes"], t["sharpness"], t["seconds_per_image"]))
    for key in sorted(k for k in m if k.startswith("student_")):
        s = m[key]
        print("| student (LCM) | {} | {:.1%} | {:.2f} | {:.1f} | {:.2f}x | {:.0f} | {:.4f} | {:.1f}x |".format(
            key.split("_")[1], s["probe_accuracy"], s["probe_accuracy"] / t["probe_accuracy"], s["fd_shapes"],
            s["fd_shapes"] / t["fd_shapes"], s["sharpness"], s["seconds_per_image"], s["speedup"]))
    print()

print("| objective | steps | style acc before | style acc after | class acc after | FD before | FD after | "
      "sharpness before | sharpness after | raw ratio | relative to real: before | after | ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for objective in ("naive", "pso"):
    path = os.path.join(out, objective, "metrics.json")
    if not os.path.exists(path):
        continue
    m = json.load(open(path))
    for key in sorted(k for k in m if k.startswith("steps_")):
        b, a = m[key]["before"], m[key]["after"]
        print("| {} | {} | {:.1%} | {:.1%} | {:.1%} | {:.1f} | {:.1f} | {:.0f} | {:.0f} | {:.2f} | {:.2f} | {:.2f} "
              "| {:.2f} |".format(
                  objective, key.split("_")[1], b["style_accuracy"], a["style_accuracy"], a["class_accuracy"],
                  b["fd_shapes"], a["fd_shapes"], b["sharpness"], a["sharpness"], m[key]["sharpness_ratio"],
                  b.get("relative_sharpness", 0), a.get("relative_sharpness", 0),
                  m[key].get("relative_sharpness_ratio", 0)))
