"""Reference for bench/dit_throughput.cpp: the same DiT configuration in diffusers (DiTTransformer2DModel),
the same loss, optimizer, batch sizes and thread count, measured the same way. One JSON line.

    python bench/dit_reference.py PRESET BATCH TRAIN_STEPS SAMPLE_BATCH SAMPLE_STEPS THREADS
"""
import json
import resource
import sys
import time

import torch
from diffusers import DDPMScheduler, DiTTransformer2DModel

PRESETS = {  # name: (depth, hidden, heads, patch), as diffusion/dit.cpp's dit_preset
    "DiT-T/4": (6, 128, 4, 4), "DiT-T/2": (6, 128, 4, 2),
    "DiT-S/2": (12, 384, 6, 2), "DiT-S/4": (12, 384, 6, 4), "DiT-B/2": (12, 768, 12, 2),
}


def main():
    preset, batch, train_steps, sample_batch, sample_steps, threads = sys.argv[1:7]
    batch, train_steps, sample_batch, sample_steps, threads = map(int, (batch, train_steps, sample_batch, sample_steps, threads))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    depth, hidden, heads, patch = PRESETS[preset]
    model = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=4,
                                  out_channels=8, num_layers=depth, sample_size=32, patch_size=patch,
                                  num_embeds_ada_norm=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    sched = DDPMScheduler(num_train_timesteps=1000)
    gen = torch.Generator().manual_seed(0)

    def train_step():
        x0 = torch.randn(batch, 4, 32, 32, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        y = torch.randint(0, 1000, (batch,), generator=gen)
        out = model(sched.add_noise(x0, noise, t), timestep=t, class_labels=y).sample
        loss = (out[:, :4] - noise).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    for _ in range(3):
        train_step()
    t0 = time.perf_counter()
    for _ in range(train_steps):
        train_step()
    train_s = time.perf_counter() - t0

    model.eval()
    with torch.no_grad():
        x = torch.randn(2 * sample_batch, 4, 32, 32, generator=gen)
        y = torch.cat([torch.randint(0, 1000, (sample_batch,), generator=gen), torch.full((sample_batch,), 1000)])
        model(x, timestep=torch.full((2 * sample_batch,), 999.0), class_labels=y)
        t0 = time.perf_counter()
        for i in range(sample_steps):
            model(x, timestep=torch.full((2 * sample_batch,), 999.0 - i), class_labels=y)
        sample_s = time.perf_counter() - t0

    print(json.dumps({
        "impl": "diffusers", "preset": preset, "threads": threads,
        "train_img_per_s": round(batch * train_steps / train_s, 2),
        "sample_img_per_s": round(sample_batch / (sample_s / sample_steps * 50), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
