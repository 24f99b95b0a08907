#!/usr/bin/env python3
"""Writes the DiT LoRA fixtures to tests/fixtures/lora/dit/ (read by tests/test_lora_files.cpp).

The base is the tiny random diffusers DiTTransformer2DModel of make_dit_fixtures.py (same CONFIG and
parameter recipe), saved as a diffusers model folder. Two LoRAs are trained-looking (random, non-zero
lora_B) and saved by the libraries themselves:

  transformer/diffusion_pytorch_model.safetensors, transformer/config.json   the base (save_pretrained)
  peft/adapter_model.safetensors, peft/adapter_config.json
      PEFT's save_pretrained of a LoRA on to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2, proj_out_2
      and the patch embedding conv pos_embed.proj: r 4, lora_alpha 8, with rank_pattern {to_k: 2} and
      alpha_pattern {to_v: 3} (so the three parts of one qkv have different ranks and scales).
  kohya.safetensors
      a second LoRA on to_q and to_v only (to_k has none: a zero block on qkv), r 2, lora_alpha 2, injected
      into the bare model by peft.inject_adapter_in_model and converted to kohya names
      (transformer_blocks_0_attn1_to_q.lora_down.weight, no lora_unet_ prefix) by diffusers'
      convert_state_dict_to_kohya (which writes alpha = rank, so
      its scale 1 equals PEFT's lora_alpha / r here).
  io.safetensors
      latents [2,4,8,8], timesteps [2], labels [2] (3 and the null class 10);
      sample_base: the base model; sample_peft: the PEFT model with its adapter active (unmerged);
      sample_peft_merged: after merge_and_unload; sample_kohya_merged: the base with the second LoRA
      merged (PEFT). Metadata "config": the Atelier DiTConfig.

Usage: /work/fixtures-venv/bin/python scripts/make_dit_lora_fixtures.py
"""
import json
import os
import shutil
import sys
import tempfile

import torch
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
from peft import LoraConfig, inject_adapter_in_model, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dit_fixtures import ATELIER_CONFIG, build_model  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "lora", "dit")


def randomize_lora_b(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def forward(model, inputs):
    latents, timesteps, labels = inputs
    with torch.no_grad():
        return model(latents, timestep=timesteps, class_labels=labels).sample.contiguous()


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    base = build_model()
    base.save_pretrained(os.path.join(OUT, "transformer"), safe_serialization=True)
    g = torch.Generator().manual_seed(7)
    inputs = (
        torch.randn(2, 4, 8, 8, generator=g).half().float(),
        torch.tensor([10.0, 500.0]),
        torch.tensor([3, 10]),
    )
    io = {"latents": inputs[0], "timesteps": inputs[1], "labels": inputs[2], "sample_base": forward(base, inputs)}

    # 1. PEFT, saved by PEFT.
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_out_2", "pos_embed.proj"],
        rank_pattern={"to_k": 2},
        alpha_pattern={"to_v": 3},
        lora_dropout=0.0,
    )
    peft_model = get_peft_model(build_model(), config).eval()
    randomize_lora_b(peft_model, 11)
    io["sample_peft"] = forward(peft_model, inputs)
    tmp = tempfile.mkdtemp()
    peft_model.save_pretrained(tmp)
    os.makedirs(os.path.join(OUT, "peft"))
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy(os.path.join(tmp, f), os.path.join(OUT, "peft", f))
    shutil.rmtree(tmp)
    io["sample_peft_merged"] = forward(peft_model.merge_and_unload(), inputs)

    # 2. kohya names from diffusers' converter, on a LoRA injected into the bare model (keys without
    # "base_model.model.", as diffusers' training scripts save them; DiTTransformer2DModel has no add_adapter).
    config2 = LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], lora_dropout=0.0)
    model2 = get_peft_model(build_model(), config2).eval()
    randomize_lora_b(model2, 12)
    bare = inject_adapter_in_model(config2, build_model()).eval()
    set_peft_model_state_dict(bare, get_peft_model_state_dict(model2))
    kohya = convert_state_dict_to_kohya(get_peft_model_state_dict(bare))
    save_file({k: v.contiguous() for k, v in kohya.items()}, os.path.join(OUT, "kohya.safetensors"))
    io["sample_kohya_merged"] = forward(model2.merge_and_unload(), inputs)
    assert torch.allclose(forward(bare, inputs), io["sample_kohya_merged"], atol=1e-5)

    save_file(io, os.path.join(OUT, "io.safetensors"), metadata={"config": json.dumps(ATELIER_CONFIG)})
    print("kohya keys:", sorted(kohya)[:4], "...")
    print("wrote", os.path.abspath(OUT))


if __name__ == "__main__":
    main()
