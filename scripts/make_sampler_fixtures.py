#!/usr/bin/env python3
"""Writes the sampler parity fixtures to tests/fixtures/samplers/ (read by tests/test_samplers.cpp).

Reference: the PyPI `diffusers` schedulers (DDPM, DDIM, EulerDiscrete, EulerAncestralDiscrete,
DPMSolverMultistep, LCM) and facebookresearch/DiT's schedule/respacing formulas (re-stated below in float64
numpy, as DiT computes them; DiT is not a pip package).

  samplers.safetensors   every tensor, named "<case>/<what>"; samplers.json lists the cases, their scheduler
                         configs and the steps recorded, for readers.

Contents
  schedule/<name>/abar_f64      [1000] float64 alphas_cumprod the DiT way (numpy float64) for linear,
                                scaled_linear, cosine; schedule/<name>/abar_f32 = diffusers' float32 ones.
  respace/<spec>/map, betas     DiT space_timesteps + SpacedDiffusion betas for "250", "ddim50", "10,15,20", "999".
  spacing/ns                    the step counts n; spacing/<scheduler>/<spacing> the concatenated
                                set_timesteps(n) lists of DDIMScheduler (int), EulerDiscreteScheduler (float32),
                                DPMSolverMultistepScheduler (int); spacing/lcm the LCM lists for lcm_ns.
                                diffusers' trailing lists have n + 1 entries (the last -1) for n = 61, 103.
  inputs/sample, inputs/out<i>, inputs/var_values   fixed [2, 4, 4, 4] tensors fed to single steps.
  <case>/timesteps, /sigmas     set_timesteps(n) of the case's scheduler.
  <case>/step<k>/...            one scheduler.step at timestep index k: prev (prev_sample), x0 (pred_original_sample /
                                denoised), noise (the standard normal the step drew, re-drawn from the same seed).
  dpmpp*/x<i>                   the DPM-Solver++ chain: x0 = inputs/sample, x<i+1> = step(out<i>, t_i, x<i>).
  loop_<case>/init, final       a full sampling loop written like diffusers' pipelines: x = randn(generator) *
                                init_noise_sigma, then step with the same CPU generator (seed 1234), denoiser =
                                toy(x, t) = 0.9 x + bias * (t / 1000) (+ tanh(x) as variance values for DDPM
                                learned_range), bias = loop/bias [1, 4, 1, 1].

Usage: /work/fixtures-venv/bin/python scripts/make_sampler_fixtures.py
"""
import json
import math
import os

import numpy as np
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler)
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "samplers")
SHAPE = (2, 4, 4, 4)
SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
T = {}  # name -> tensor
CASES = {}  # name -> {"scheduler", "config", "n", "steps"}


def put(name, t):
    T[name] = t.detach().clone().contiguous()


# ---- schedules (DiT computes in float64 numpy) -----------------------------------------------------------

def dit_betas(name, n=1000):
    if name == "linear":
        scale = 1000 / n
        return np.linspace(scale * 0.0001, scale * 0.02, n, dtype=np.float64)
    if name == "scaled_linear":
        return np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, n, dtype=np.float64) ** 2
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)])


def schedules():
    for name, cfg in [("linear", {}), ("scaled_linear", SD), ("cosine", dict(beta_schedule="squaredcos_cap_v2"))]:
        put(f"schedule/{name}/abar_f64", torch.from_numpy(np.cumprod(1.0 - dit_betas(name))))
        put(f"schedule/{name}/abar_f32", DDPMScheduler(**cfg).alphas_cumprod)


def space_timesteps(num_timesteps, section_counts):
    """DiT diffusion/respace.py space_timesteps, re-stated."""
    if section_counts.startswith("ddim"):
        desired = int(section_counts[len("ddim"):])
        for i in range(1, num_timesteps):
            if len(range(0, num_timesteps, i)) == desired:
                return sorted(set(range(0, num_timesteps, i)))
        raise ValueError(section_counts)
    counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = num_timesteps // len(counts), num_timesteps % len(counts)
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(steps))


def respacings():
    abar = np.cumprod(1.0 - dit_betas("linear"))
    for spec in ["250", "ddim50", "10,15,20", "999"]:
        kept = space_timesteps(1000, spec)
        last, betas = 1.0, []
        for i, a in enumerate(abar):  # SpacedDiffusion.__init__
            if i in kept:
                betas.append(1 - a / last)
                last = a
        put(f"respace/{spec}/map", torch.tensor(kept, dtype=torch.int64))
        put(f"respace/{spec}/betas", torch.tensor(betas, dtype=torch.float64))


# ---- timestep lists ----------------------------------------------------------------------------------------

NS = [1, 2, 3, 4, 5, 7, 8, 10, 13, 20, 25, 33, 50, 61, 100, 103]
LCM_NS = [1, 2, 3, 4, 5, 6, 8, 50]


def spacings():
    put("spacing/ns", torch.tensor(NS, dtype=torch.int64))
    for spacing in ["leading", "trailing", "linspace"]:
        ddim, euler, dpm = [], [], []
        for n in NS:
            s = DDIMScheduler(**SD, timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
            s.set_timesteps(n)
            ddim.append(s.timesteps)
            e = EulerDiscreteScheduler(**SD, timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
            e.set_timesteps(n)
            euler.append(e.timesteps.to(torch.float32))
            d = DPMSolverMultistepScheduler(**SD, timestep_spacing=spacing,
                                            steps_offset=1 if spacing == "leading" else 0)
            d.set_timesteps(n)
            dpm.append(d.timesteps)
        put(f"spacing/ddim/{spacing}", torch.cat(ddim).to(torch.int64))
        put(f"spacing/euler/{spacing}", torch.cat(euler))
        put(f"spacing/dpm/{spacing}", torch.cat(dpm).to(torch.int64))
    lcm = []
    for n in LCM_NS:
        s = LCMScheduler()
        s.set_timesteps(n)
        lcm.append(s.timesteps)
    put("spacing/lcm_ns", torch.tensor(LCM_NS, dtype=torch.int64))
    put("spacing/lcm", torch.cat(lcm).to(torch.int64))


# ---- single steps --------------------------------------------------------------------------------------------

def inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g)
    outs = [torch.randn(SHAPE, generator=g) for _ in range(6)]
    var_values = torch.tanh(torch.randn(SHAPE, generator=g))
    put("inputs/sample", x)
    for i, o in enumerate(outs):
        put(f"inputs/out{i}", o)
    put("inputs/var_values", var_values)
    return x, outs, var_values


def seeded(k):
    return torch.Generator().manual_seed(100 + k)


def noise_of(k, shape=SHAPE):
    return torch.randn(shape, generator=seeded(k), dtype=torch.float32)  # what randn_tensor drew on the CPU


def record_case(name, scheduler, config, n, steps):
    CASES[name] = {"scheduler": scheduler, "config": config, "n": n, "steps": steps}


def ddpm_case(name, config, n, ks, x, out, **step_kw):
    s = DDPMScheduler(**config)
    s.set_timesteps(n)
    put(f"{name}/timesteps", s.timesteps.to(torch.int64))
    for k in ks:
        t = s.timesteps[k]
        r = s.step(out, t, x, generator=seeded(k))
        put(f"{name}/step{k}/prev", r.prev_sample)
        put(f"{name}/step{k}/x0", r.pred_original_sample)
        if t > 0:
            put(f"{name}/step{k}/noise", noise_of(k))
    record_case(name, "DDPMScheduler", config, n, ks)


def ddim_case(name, config, n, ks, eta, x, out):
    s = DDIMScheduler(**config)
    s.set_timesteps(n)
    put(f"{name}/timesteps", s.timesteps.to(torch.int64))
    prevs = []
    for k in ks:
        t = s.timesteps[k]
        noise = noise_of(k) if eta > 0 else None
        r = s.step(out, t, x, eta=eta, variance_noise=noise)
        put(f"{name}/step{k}/prev", r.prev_sample)
        put(f"{name}/step{k}/x0", r.pred_original_sample)
        if noise is not None:
            put(f"{name}/step{k}/noise", noise)
        prevs.append(int(t) - s.config.num_train_timesteps // n)  # diffusers' previous timestep
    put(f"{name}/t_prev", torch.tensor(prevs, dtype=torch.int64))
    record_case(name, "DDIMScheduler", dict(config, eta=eta), n, ks)


def euler_case(name, cls, config, n, ks, x, out):
    s = cls(**config)
    s.set_timesteps(n)
    put(f"{name}/timesteps", s.timesteps.to(torch.float32))
    put(f"{name}/sigmas", s.sigmas.to(torch.float32))
    put(f"{name}/init_noise_sigma", torch.tensor([float(s.init_noise_sigma)], dtype=torch.float64))
    for k in ks:
        s.set_timesteps(n)
        s.set_begin_index(k)
        t = s.timesteps[k]
        put(f"{name}/step{k}/model_input", s.scale_model_input(x, t))
        r = s.step(out, t, x, generator=seeded(k))
        put(f"{name}/step{k}/prev", r.prev_sample)
        put(f"{name}/step{k}/x0", r.pred_original_sample)
        if cls is EulerAncestralDiscreteScheduler:
            put(f"{name}/step{k}/noise", noise_of(k))
    record_case(name, cls.__name__, config, n, ks)


def dpm_case(name, config, n, x, outs):
    s = DPMSolverMultistepScheduler(**config)
    s.set_timesteps(n)
    put(f"{name}/timesteps", s.timesteps.to(torch.int64))
    put(f"{name}/sigmas", s.sigmas.to(torch.float32))
    put(f"{name}/x0", x)
    for i, t in enumerate(s.timesteps):
        x = s.step(outs[i], t, x).prev_sample
        put(f"{name}/x{i + 1}", x)
    record_case(name, "DPMSolverMultistepScheduler", config, n, list(range(n)))


def lcm_case(name, config, n, x, out):
    s = LCMScheduler(**config)
    s.set_timesteps(n)
    put(f"{name}/timesteps", s.timesteps.to(torch.int64))
    for k in range(n):
        s.set_timesteps(n)
        s.set_begin_index(k)
        t = s.timesteps[k]
        r = s.step(out, t, x, generator=seeded(k))
        put(f"{name}/step{k}/prev", r.prev_sample)
        put(f"{name}/step{k}/x0", r.denoised)
        if k + 1 < n:
            put(f"{name}/step{k}/noise", noise_of(k))
    record_case(name, "LCMScheduler", config, n, list(range(n)))


def single_steps():
    x, outs, var_values = inputs()
    out2c = torch.cat([outs[0], var_values], dim=1)
    dit = dict(variance_type="learned_range", clip_sample=False, timestep_spacing="linspace")  # DiT: linear 1e-4..0.02
    ddpm_case("ddpm_dit", dit, 50, [0, 25, 48, 49], x, out2c)
    ddpm_case("ddpm_small_v", dict(SD, prediction_type="v_prediction", clip_sample=True, timestep_spacing="leading",
                                   steps_offset=1), 20, [0, 10, 18], x, outs[0])
    ddpm_case("ddpm_large_cos", dict(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", clip_sample=False,
                                     prediction_type="sample", timestep_spacing="trailing"), 10, [0, 5], x, outs[0])
    ddim_case("ddim_eta0", dict(SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1), 50, [0, 25, 49], 0.0,
              x, outs[0])
    ddim_case("ddim_eta1_v", dict(SD, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing",
                                  prediction_type="v_prediction"), 10, [0, 5, 9], 1.0, x, outs[0])
    ddim_case("ddim_x0_clip", dict(clip_sample=True, prediction_type="sample"), 25, [0, 24], 0.5, x, outs[0])
    euler_case("euler_linspace", EulerDiscreteScheduler, dict(SD), 30, [0, 15, 29], x, outs[0])
    euler_case("euler_trailing_v", EulerDiscreteScheduler,
               dict(SD, timestep_spacing="trailing", prediction_type="v_prediction"), 4, [0, 3], x, outs[0])
    euler_case("euler_a", EulerAncestralDiscreteScheduler, dict(SD), 20, [0, 10, 19], x, outs[0])
    euler_case("euler_a_leading_v", EulerAncestralDiscreteScheduler,
               dict(SD, timestep_spacing="leading", steps_offset=1, prediction_type="v_prediction"), 25, [0, 24], x,
               outs[0])
    dpm_case("dpmpp", dict(SD), 6, x, outs)
    dpm_case("dpmpp_leading_v", dict(SD, timestep_spacing="leading", steps_offset=1, prediction_type="v_prediction"),
             5, x, outs)
    lcm_case("lcm", dict(set_alpha_to_one=False, steps_offset=1), 4, x, outs[0])


# ---- full loops ----------------------------------------------------------------------------------------------

def loops():
    bias = torch.randn((1, 4, 1, 1), generator=torch.Generator().manual_seed(7))
    put("loop/bias", bias)

    def toy(x, t, learned=False):
        out = 0.9 * x + bias * (torch.as_tensor(t).to(torch.float32) / 1000)
        return torch.cat([out, torch.tanh(x)], dim=1) if learned else out

    def run(name, s, n, learned=False, **step_kw):
        s.set_timesteps(n)
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(SHAPE, generator=g, dtype=torch.float32) * s.init_noise_sigma
        put(f"loop_{name}/init", x)
        for t in s.timesteps:
            out = toy(s.scale_model_input(x, t), t, learned)
            x = s.step(out, t, x, generator=g, **step_kw).prev_sample
        put(f"loop_{name}/final", x)
        put(f"loop_{name}/timesteps", s.timesteps.to(torch.float32))

    run("ddpm_dit", DDPMScheduler(variance_type="learned_range", clip_sample=False, timestep_spacing="linspace"), 20,
        learned=True)
    run("ddim_eta1", DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1), 10, eta=1.0)
    run("euler", EulerDiscreteScheduler(**SD), 10)
    run("euler_a", EulerAncestralDiscreteScheduler(**SD, timestep_spacing="trailing"), 8)
    run("dpmpp", DPMSolverMultistepScheduler(**SD), 10)
    run("lcm", LCMScheduler(set_alpha_to_one=False), 4)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_grad_enabled(False)
    schedules()
    respacings()
    spacings()
    single_steps()
    loops()
    save_file(T, os.path.join(OUT, "samplers.safetensors"))
    import diffusers
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__, "cases": CASES}
    with open(os.path.join(OUT, "samplers.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    size = os.path.getsize(os.path.join(OUT, "samplers.safetensors"))
    print(f"{len(T)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
