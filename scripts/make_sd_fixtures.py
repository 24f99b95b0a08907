#!/usr/bin/env python3
"""Writes the Stable Diffusion pipeline fixture to tests/fixtures/sd/ (read by tests/test_stable_diffusion.cpp).

A tiny random StableDiffusionPipeline (diffusers 0.42.1) with the real CLIP tokenizer (built from the shipped
assets/text/bpe_simple_vocab_16e6.txt.gz, as scripts/make_clip_text_fixtures.py does) runs a whole DDIM
text-to-image loop with classifier-free guidance; the C++ pipeline must reproduce it from the same prompts
and seed (the initial latents come from the seed: a CPU torch.Generator, as Atelier's Rng).

  tiny/model_index.json, unet/, text_encoder/, vae/, scheduler/   the pipeline (float16 weights) as
      save_pretrained writes it, without tokenizer/ (the C++ side uses the shipped vocabulary; the
      tokenizer's merges.txt alone would triple the fixture). Components:
        UNet2DConditionModel  sample 8, channels (8, 16), 1 layer per block, CrossAttnDown + Down / Up +
                              CrossAttnUp, 2 heads, context 4, 4 groups
        CLIPTextModel         vocabulary 49408 (the real ids), width 4, 2 layers, 1 head, quick_gelu
        AutoencoderKL         channels (8, 16), 1 layer per block, 4 groups: factor 2 (8x8 latents -> 16x16)
        DDIMScheduler         SD's: scaled_linear 0.00085..0.012, steps_offset 1, set_alpha_to_one false
      Every parameter is redrawn from N(0, 0.1) and rounded to float16 (default inits zero some output
      layers, which would make the check vacuous).
  io.safetensors   latents [2, 4, 8, 8] (the loop's output before decoding) and images [2, 3, 16, 16] in
                   [-1, 1] (decoded, before the pipeline's [0, 1] post-processing); metadata "request":
                   prompts, negative prompt, steps, guidance, seed.

Usage: /work/fixtures-venv/bin/python scripts/make_sd_fixtures.py
"""
import json
import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_clip_text_fixtures import build_tokenizer  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "sd")
REQUEST = dict(
    prompts=["a red circle on a white background", "a photo of a cat, watercolor"],
    negative_prompt="blurry, low quality",
    steps=4,
    guidance=7.5,
    seed=3,
)


def randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((0.1 * torch.randn(p.shape, generator=g)).half().float())
    return module


def main():
    torch.manual_seed(0)
    unet = randomize(
        UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=2,
            cross_attention_dim=4,
            norm_num_groups=4,
        ),
        1,
    ).eval()
    text = randomize(
        CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=4,
                intermediate_size=8,
                num_hidden_layers=2,
                num_attention_heads=1,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                bos_token_id=49406,
                eos_token_id=2,
                pad_token_id=1,
            )
        ),
        2,
    ).eval()
    vae = randomize(
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
        ),
        3,
    ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=build_tokenizer(model_max_length=77),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)

    def run(output_type):
        return pipe(
            REQUEST["prompts"],
            negative_prompt=[REQUEST["negative_prompt"]] * len(REQUEST["prompts"]),
            num_inference_steps=REQUEST["steps"],
            guidance_scale=REQUEST["guidance"],
            generator=torch.Generator().manual_seed(REQUEST["seed"]),
            output_type=output_type,
        ).images

    with torch.no_grad():
        latents = run("latent")
        images = vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)

    shutil.rmtree(OUT, ignore_errors=True)
    tiny = os.path.join(OUT, "tiny")
    pipe.save_pretrained(tiny, safe_serialization=True)
    shutil.rmtree(os.path.join(tiny, "tokenizer"))
    # Weights in float16 (their values are float16 already): half the size, and the loaders' dtype path.
    for module, path in ((text, "text_encoder/model.safetensors"), (unet, "unet/diffusion_pytorch_model.safetensors"),
                         (vae, "vae/diffusion_pytorch_model.safetensors")):
        save_file({k: v.half().contiguous() for k, v in module.state_dict().items()}, os.path.join(tiny, path))
    save_file(
        {"latents": latents.contiguous(), "images": images.contiguous()},
        os.path.join(OUT, "io.safetensors"),
        metadata={"request": json.dumps(REQUEST)},
    )
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {os.path.abspath(OUT)} ({total} bytes); latents std {latents.std():.4f}")


if __name__ == "__main__":
    main()
