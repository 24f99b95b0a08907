#!/usr/bin/env python3
"""Markdown tables of an E2GAN bench folder (bench/run_e2gan_bench.sh).

    bench/format_e2gan_bench.py RUNS

Matched fidelity: the searched-rank LoRA's final held-out L1 to the teacher is the target; for the
full fine-tuning and from-scratch runs, the time to reach it is read off their held-out evaluations
(eval events in log.jsonl) as train_seconds * step / steps at the first evaluation at or below it.
The same is read against the ground-truth restyles: the time each run needs to reach the searched
LoRA's final held-out L1 to the truth (runs whose evaluations log val_l1_truth).
"""
import json
import sys
from pathlib import Path


def load(path):
    return json.loads(Path(path).read_text())


def evals(run, key="val_l1"):
    """[(step, value of `key`)] of a run's held-out evaluations, in order."""
    out = []
    for line in (run / "log.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("type") == "progress" and e.get("phase") == "eval" and key in e.get("scalars", {}):
            out.append((e["step"], e["scalars"][key]))
    return out


def time_to(run, m, target, key="val_l1"):
    """Seconds of training until the held-out `key` first reaches `target` (None: never)."""
    cfg = load(run / "config.json")
    steps = cfg["steps"]
    for step, l1 in evals(run, key):
        if l1 <= target:
            return m["train_seconds"] * step / steps + m.get("search_seconds", 0.0), step
    return None, None


def reach_text(run, m, target, key):
    """'12 s (step 300)', or why not."""
    if not evals(run, key):
        return "not logged"
    sec, step = time_to(run, m, target, key)
    if sec is None:
        return f"not reached in {load(run / 'config.json')['steps']} steps"
    return f"{sec:.0f} s (step {step})"


def main(root):
    root = Path(root)
    print("### Teachers (diffusion edits, SDEdit strength 0.6, DPM++ 2M 30 steps, 2 cores)\n")
    print("| edit | pairs kept | teacher s/image | teacher vs truth: L1 | PSNR | FD-shapes |")
    print("|---|---|---|---|---|---|")
    for s in sorted(p.name[len("pairs_"):] for p in root.glob("pairs_*")):
        p = root / f"pairs_{s}" / "metrics.json"
        if not p.exists():
            continue
        m = load(p)
        t = m.get("teacher_vs_truth", {})
        print(f"| {s} | {m['train_pairs']} | {m['teacher_seconds_per_image']:.3f} | {t.get('l1', float('nan')):.3f} | "
              f"{t.get('psnr', float('nan')):.2f} dB | {t.get('fd_shapes', float('nan')):.1f} |")
    b = load(root / "base" / "metrics.json")
    print(f"\n### Base generator: {b['parameters']:,} parameters, {b['train_seconds']:.0f} s of training\n")
    print("| edit | held-out L1 to teacher | PSNR | L1 to truth | PSNR to truth |")
    print("|---|---|---|---|---|")
    for e, f in b["edits"].items():
        print(f"| {e} | {f['l1']:.3f} | {f['psnr']:.2f} dB | {f.get('l1_truth', float('nan')):.3f} | "
              f"{f.get('psnr_truth', float('nan')):.2f} dB |")

    search = load(root / "lora_search" / "metrics.json")
    target = search["fidelity"]["l1"]
    target_truth = search["fidelity"].get("l1_truth", -1.0)
    t_search, _ = time_to(root / "lora_search", search, target)
    print(f"\n### New edit '{search['edit']}' (targets: the searched LoRA's final held-out L1 {target:.3f} to "
          f"the teacher, {target_truth:.3f} to the truth)\n")
    print("| method | stored parameters | % of base | time to target | time to truth target | total training | "
          "held-out L1 | PSNR | L1 to truth | FD-shapes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [("E2GAN: LoRA, searched ranks", "lora_search")] + \
           [(f"LoRA, uniform rank {r}", f"lora_uniform_r{r}") for r in (1, 2, 4)] + \
           [("full fine-tuning of the base", "full"), ("from scratch (pix2pix-style)", "scratch")]
    times = {}
    for label, name in rows:
        run = root / name
        if not (run / "metrics.json").exists():
            continue
        m = load(run / "metrics.json")
        f = m["fidelity"]
        total = m["train_seconds"] + m.get("search_seconds", 0.0)
        if name == "lora_search":
            reach = f"{t_search:.0f} s (search {m['search_seconds']:.0f} s)"
            times[name] = t_search
        else:
            reach = reach_text(run, m, target, "val_l1")
            times[name], _ = time_to(run, m, target)
        truth = reach_text(run, m, target_truth, "val_l1_truth")
        print(f"| {label} | {m['stored_parameters']:,} | {100 * m['stored_fraction']:.2f}% | {reach} | {truth} | "
              f"{total:.0f} s | "
              f"{f['l1']:.3f} | {f['psnr']:.2f} dB | {f.get('l1_truth', float('nan')):.3f} | "
              f"{f.get('fd_shapes', float('nan')):.1f} |")
    print(f"\nSearched ranks: {search['ranks']}")
    if times.get("scratch"):
        print(f"Speed-up to matched fidelity vs scratch: {times['scratch'] / t_search:.1f}x")
    elif "scratch" in times:
        print("Scratch never reached the target in its steps: the speed-up is at least "
              f"{load(root / 'scratch' / 'metrics.json')['train_seconds'] / t_search:.1f}x")

    e = root / "export" / "metrics.json"
    if e.exists():
        m = load(e)
        print(f"\n### Export at {m['size']}x{m['size']} (one thread)\n")
        print("| runtime | precision | latency | max abs error (random / Shapes) |")
        print("|---|---|---|---|")
        errs = {}
        for r in m.get("parity", {}).get("results", []):
            errs.setdefault((r["runtime"], r["precision"]), []).append(f"{r['max_abs_error']:.1e}")
        for t in m.get("parity", {}).get("latency", []):
            k = (t["runtime"], t["precision"])
            print(f"| {t['runtime']} | {t['precision']} | {t['median_ms']:.1f} ms | {' / '.join(errs.get(k, []))} |")
        tp = load(root / f"pairs_{search['edit']}" / "metrics.json")["teacher_seconds_per_image"]
        print(f"\nDiffusion teacher per edit: {1000 * tp:.0f} ms per 32x32 image (batched, 2 cores).")


if __name__ == "__main__":
    main(sys.argv[1])
