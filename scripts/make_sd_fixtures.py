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
  lora/pytorch_lora_weights.safetensors
      a LoRA on the UNet (to_q, to_k, to_v, to_out.0, ff.net.2, proj_in and the resnets' 3x3 conv1: conv
      LoRA; r 2, lora_alpha 4) and the text encoder (q/k/v/out_proj; r 2, lora_alpha 1), injected by
      peft.inject_adapter_in_model and saved by StableDiffusionPipeline.save_lora_weights with the adapters'
      configs as metadata (keys unet.* and text_encoder.*, PEFT names).
  lora/kohya.safetensors
      a second LoRA (UNet attention and text encoder, r 2, lora_alpha 2) converted to kohya names
      (lora_unet_*, lora_te1_*) by diffusers' convert_state_dict_to_kohya (which writes alpha = rank).
  tiny_ldm.safetensors, tiny_ldm.ckpt
      the same three models as one single-file checkpoint with LDM names, as artists download them
      (model.diffusion_model.*, cond_stage_model.transformer.text_model.*, first_stage_model.*; names by the
      independent conversions of make_unet_fixtures.py and make_vae_fixtures.py), float16; the .ckpt is
      torch.save({"state_dict": ..., "global_step": 1}) as LDM training writes it.
  io.safetensors   latents [2, 4, 8, 8] (the loop's output before decoding) and images [2, 3, 16, 16] in
                   [-1, 1] (decoded, before the pipeline's [0, 1] post-processing); latents_peft and
                   latents_kohya: the same loop with each LoRA active; metadata "request": prompts,
                   negative prompt, steps, guidance, seed.

Usage: /work/fixtures-venv/bin/python scripts/make_sd_fixtures.py
"""
import json
import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_clip_text_fixtures import build_tokenizer  # noqa: E402
from make_unet_fixtures import to_ldm_names as unet_to_ldm  # noqa: E402
from make_vae_fixtures import to_ldm_names as vae_to_ldm  # noqa: E402

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


def randomize_lora_b(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.copy_((1.0 * torch.randn(p.shape, generator=g)).half().float())


def main():
    shutil.rmtree(OUT, ignore_errors=True)
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

    # 1. A PEFT LoRA on both models, saved the diffusers way (with its configs as metadata).
    lora_dir = os.path.join(OUT, "lora")
    unet_config = LoraConfig(
        r=2, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.2", "proj_in", "conv1"]
    )
    text_config = LoraConfig(r=2, lora_alpha=1, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    unet_sd, text_sd = {k: v.clone() for k, v in unet.state_dict().items()}, {k: v.clone() for k, v in text.state_dict().items()}

    def fresh_models(unet_lora, text_lora, adapter, seeds):
        u = UNet2DConditionModel.from_config(unet.config)
        u.load_state_dict(unet_sd)
        t = CLIPTextModel(text.config)
        t.load_state_dict(text_sd)
        u = inject_adapter_in_model(unet_lora, u.eval(), adapter_name=adapter)
        t = inject_adapter_in_model(text_lora, t.eval(), adapter_name=adapter)
        randomize_lora_b(u, seeds[0])
        randomize_lora_b(t, seeds[1])
        pipe.unet, pipe.text_encoder = u, t
        return u, t

    lora_unet, lora_text = fresh_models(unet_config, text_config, "default", (21, 22))
    with torch.no_grad():
        latents_peft = run("latent")
    StableDiffusionPipeline.save_lora_weights(
        lora_dir,
        unet_lora_layers=get_peft_model_state_dict(lora_unet),
        text_encoder_lora_layers=get_peft_model_state_dict(lora_text),
        unet_lora_adapter_metadata=unet_config.to_dict(),
        text_encoder_lora_adapter_metadata=text_config.to_dict(),
        safe_serialization=True,
    )

    # 2. kohya names from diffusers' converter (alpha = rank, so lora_alpha = r keeps the same scale).
    unet2 = LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v", "to_out.0"])
    text2 = LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj", "v_proj"])
    lora_unet, lora_text = fresh_models(unet2, text2, "second", (23, 24))
    with torch.no_grad():
        latents_kohya = run("latent")
    peft_sd = {f"unet.{k}": v for k, v in get_peft_model_state_dict(lora_unet, adapter_name="second").items()}
    peft_sd.update(
        {f"text_encoder.{k}": v for k, v in get_peft_model_state_dict(lora_text, adapter_name="second").items()}
    )
    kohya = convert_state_dict_to_kohya(peft_sd)
    save_file({k: v.contiguous() for k, v in kohya.items()}, os.path.join(lora_dir, "kohya.safetensors"))
    pipe.unet, pipe.text_encoder = unet, text

    tiny = os.path.join(OUT, "tiny")
    pipe.save_pretrained(tiny, safe_serialization=True)
    shutil.rmtree(os.path.join(tiny, "tokenizer"))
    # Weights in float16 (their values are float16 already): half the size, and the loaders' dtype path.
    for module, path in ((text, "text_encoder/model.safetensors"), (unet, "unet/diffusion_pytorch_model.safetensors"),
                         (vae, "vae/diffusion_pytorch_model.safetensors")):
        save_file({k: v.half().contiguous() for k, v in module.state_dict().items()}, os.path.join(tiny, path))
    # One LDM single file.
    ldm = dict(unet_to_ldm(unet_sd, unet.config))
    ldm.update(vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels), vae.config.layers_per_block))
    for k, v in text_sd.items():
        ldm["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = v
    ldm = {k: v.half().contiguous() for k, v in ldm.items()}
    save_file(ldm, os.path.join(OUT, "tiny_ldm.safetensors"))
    torch.save({"state_dict": ldm, "global_step": 1}, os.path.join(OUT, "tiny_ldm.ckpt"))
    save_file(
        {
            "latents": latents.contiguous(),
            "images": images.contiguous(),
            "latents_peft": latents_peft.contiguous(),
            "latents_kohya": latents_kohya.contiguous(),
        },
        os.path.join(OUT, "io.safetensors"),
        metadata={"request": json.dumps(REQUEST)},
    )
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {os.path.abspath(OUT)} ({total} bytes); latents std {latents.std():.4f}")


if __name__ == "__main__":
    main()
