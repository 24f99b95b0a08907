#!/usr/bin/env python3
"""Parity and latency of an exported E2GAN generator (the export_gan job's files) against the C++ one.

Reads <dir>/parity_reference.safetensors (inputs and the C++ generator's outputs, kinds "random" and
"shapes"), runs onnx.checker on every ONNX file, then onnxruntime and ncnn at each precision on the same
inputs, and writes <dir>/parity.json and <dir>/parity.txt: max abs error per runtime / precision / input
kind against the tolerances, and the median single-run latency at the export size.

Run with the parity venv (scripts/parity_venv.sh), e.g.
  .venv-parity/bin/python scripts/gan_parity.py --dir runs/export --stem generator
Exit status 0 when it ran (pass/fail is in parity.json), 1 when a runtime could not load a model.
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
    return out


def median_ms(fn, runs):
    fn()
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def onnx_runner(path, threads):
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(path), full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["output"], {"input": x[None]})[0][0]


def ncnn_runner(param, model, threads):
    import ncnn

    net = ncnn.Net()
    # Plain float32 arithmetic (fp16 weights are widened when the model loads).
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(param) != 0 or net.load_model(model) != 0:
        raise RuntimeError(f"ncnn could not load {param} / {model}")

    def run(x):
        ex = net.create_extractor()
        ex.input("input", ncnn.Mat(np.ascontiguousarray(x)))
        ret, out = ex.extract("output")
        if ret != 0:
            raise RuntimeError(f"ncnn extract failed ({ret}) for {param}")
        return np.array(out)

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True)
    p.add_argument("--stem", default="generator")
    p.add_argument("--formats", default="onnx,ncnn")
    p.add_argument("--precisions", default="fp32,fp16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--fp32-tolerance", type=float, default=1e-4)
    p.add_argument("--fp16-tolerance", type=float, default=2e-2)
    a = p.parse_args()

    ref = load_safetensors(os.path.join(a.dir, "parity_reference.safetensors"))
    kinds = sorted({k.split(".")[0] for k in ref})
    tolerance = {"fp32": a.fp32_tolerance, "fp16": a.fp16_tolerance}
    results, latency = [], []
    for fmt in a.formats.split(","):
        for precision in a.precisions.split(","):
            stem = os.path.join(a.dir, a.stem + (".fp16" if precision == "fp16" else ""))
            if fmt == "onnx":
                runtime, run = "onnxruntime", onnx_runner(stem + ".onnx", a.threads)
            else:
                runtime, run = "ncnn", ncnn_runner(stem + ".param", stem + ".bin", a.threads)
            for kind in kinds:
                x, y = ref[kind + ".input"], ref[kind + ".output"]
                err = max(float(np.abs(run(x[i]) - y[i]).max()) for i in range(x.shape[0]))
                results.append({"runtime": runtime, "format": fmt, "precision": precision, "inputs": kind,
                                "samples": int(x.shape[0]), "max_abs_error": err,
                                "tolerance": tolerance[precision], "pass": err <= tolerance[precision]})
            x0 = ref[kinds[0] + ".input"][0]
            latency.append({"runtime": runtime, "precision": precision, "threads": a.threads, "runs": a.runs,
                            "size": list(x0.shape[1:]), "median_ms": median_ms(lambda: run(x0), a.runs)})

    import ncnn
    import onnx
    import onnxruntime

    report = {"results": results, "latency": latency, "pass": all(r["pass"] for r in results),
              "versions": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                           "ncnn": ncnn.__version__, "numpy": np.__version__}}
    lines = [f"{'runtime':<12} {'precision':<9} {'inputs':<7} {'max abs error':>13} {'tolerance':>9}  result"]
    for r in results:
        lines.append(f"{r['runtime']:<12} {r['precision']:<9} {r['inputs']:<7} {r['max_abs_error']:>13.3e} "
                     f"{r['tolerance']:>9.0e}  {'pass' if r['pass'] else 'FAIL'}")
    lines.append("")
    lines.append(f"{'runtime':<12} {'precision':<9} {'size':<9} {'threads':>7} {'median ms':>10}")
    for t in latency:
        size = "x".join(str(s) for s in t["size"])
        lines.append(f"{t['runtime']:<12} {t['precision']:<9} {size:<9} {t['threads']:>7} {t['median_ms']:>10.2f}")
    for name, text in (("parity.json", json.dumps(report, indent=2) + "\n"), ("parity.txt", "\n".join(lines) + "\n")):
        tmp = os.path.join(a.dir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(a.dir, name))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
