#!/usr/bin/env python3
"""Writes the UNet2DConditionModel parity fixtures to tests/fixtures/unet/ (read by tests/test_unet.cpp).

Two tiny random diffusers UNet2DConditionModel configs are built at fixed seeds:
  sd1   SD-1.x layout: conv 1x1 proj_in/proj_out, one head count for every block (attention_head_dim 2),
        block_out_channels (8, 16), down (CrossAttnDownBlock2D, DownBlock2D), up (UpBlock2D,
        CrossAttnUpBlock2D), layers_per_block 1, cross_attention_dim 12, norm_num_groups 4, 16x12 latents.
  sd2   SD-2.x layout: linear proj_in/proj_out, per-block head counts (2, 4) (head dim 4), cross_attention_dim
        20, sin-first timestep embedding with freq_shift 1, an LCM time_cond_proj_dim 6, and 9x7 latents (not a
        multiple of 2, so the up block resizes to the skip connection's size).
Every parameter is redrawn (normalisation weights 1 + N(0, 0.1^2), everything else N(0, 0.1^2): the default
init zeroes conv_out and the attention output projections, which would make parity vacuous) and rounded to
float16; the references are computed in float32 from exactly those values.

  <name>/diffusion_pytorch_model.safetensors   UNet2DConditionModel.state_dict() (float16)
  <name>/config.json                            the model's diffusers config
  <name>/io.safetensors                         sample [2, 4, H, W] (float16 values), timestep [2] (float32),
                                                encoder_hidden_states [2, L, cross] (float16 values),
                                                (sd2) timestep_cond [2, 6], out [2, 4, H, W] (float32)
  sd1_ldm.safetensors                           the sd1 weights under LDM single-file names
                                                (model.diffusion_model.input_blocks..., middle_block,
                                                output_blocks, time_embed, out), written by an independent
                                                conversion below and checked against diffusers' own
                                                convert_ldm_unet_checkpoint before writing

Usage: /work/fixtures-venv/bin/python scripts/make_unet_fixtures.py
"""
import json
import os

import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "unet")

CONFIGS = {
    "sd1": dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=2,
        cross_attention_dim=12,
        norm_num_groups=4,
    ),
    "sd2": dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        cross_attention_dim=20,
        use_linear_projection=True,
        norm_num_groups=4,
        flip_sin_to_cos=False,
        freq_shift=1,
        time_cond_proj_dim=6,
    ),
}
SEEDS = {"sd1": 11, "sd2": 22}
INPUTS = {"sd1": dict(hw=(16, 12), tokens=5), "sd2": dict(hw=(9, 7), tokens=3)}


def build_model(name):
    torch.manual_seed(SEEDS[name])
    model = UNet2DConditionModel(**CONFIGS[name]).eval()
    g = torch.Generator().manual_seed(100 + SEEDS[name])
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname and pname.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())
    return model


def to_ldm_names(sd, config):
    """diffusers UNet2DConditionModel keys -> LDM (CompVis openaimodel.UNetModel) keys, written from the LDM
    layout: input_blocks.0 is conv_in, then per down block `layers` (resnet, attention) pairs and a
    downsampler (op), middle_block resnet/attention/resnet, per up block `layers + 1` (resnet, attention)
    pairs with the upsampler appended to the last one, out = (GroupNorm, SiLU, conv)."""
    layers = config["layers_per_block"]
    n = len(config["block_out_channels"])
    prefixes = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
                "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
                "mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
                "mid_block.resnets.1.": "middle_block.2."}
    for i in range(n):
        for j in range(layers):
            k = 1 + i * (layers + 1) + j
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{k}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{k}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op."
        up_has_attention = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(layers + 1):
            k = i * (layers + 1) + j
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{k}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{k}.1."
        last = i * (layers + 1) + layers
        prefixes[f"up_blocks.{i}.upsamplers.0.conv."] = f"output_blocks.{last}.{2 if up_has_attention else 1}.conv."
    resnet = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "time_emb_proj.": "emb_layers.1.",
              "norm2.": "out_layers.0.", "conv2.": "out_layers.3.", "conv_shortcut.": "skip_connection."}
    out = {}
    for key, v in sd.items():
        matches = [p for p in prefixes if key.startswith(p)]
        assert len(matches) == 1, (key, matches)
        rest = key[len(matches[0]):]
        if ".resnets." in matches[0]:
            inner = [r for r in resnet if rest.startswith(r)]
            assert len(inner) == 1, key
            rest = resnet[inner[0]] + rest[len(inner[0]):]
        out["model.diffusion_model." + prefixes[matches[0]] + rest] = v
    assert len(out) == len(sd)
    return out


def make_inputs(name, model):
    cfg = CONFIGS[name]
    h, w = INPUTS[name]["hw"]
    g = torch.Generator().manual_seed(7 + SEEDS[name])
    io = {
        "sample": torch.randn(2, cfg["in_channels"], h, w, generator=g).half().float(),
        "timestep": torch.tensor([3.0, 981.0]) if name == "sd1" else torch.tensor([499.0, 0.5]),
        "encoder_hidden_states": torch.randn(2, INPUTS[name]["tokens"], cfg["cross_attention_dim"],
                                             generator=g).half().float(),
    }
    kwargs = {}
    if cfg.get("time_cond_proj_dim"):
        io["timestep_cond"] = torch.randn(2, cfg["time_cond_proj_dim"], generator=g).half().float()
        kwargs["timestep_cond"] = io["timestep_cond"]
    with torch.no_grad():
        io["out"] = model(io["sample"], io["timestep"], io["encoder_hidden_states"], **kwargs).sample.contiguous()
    return io


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in CONFIGS:
        model = build_model(name)
        sd = {k: v.detach().contiguous().half() for k, v in model.state_dict().items()}
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        save_file(sd, os.path.join(folder, "diffusion_pytorch_model.safetensors"))
        model.save_config(folder)
        io = make_inputs(name, model)
        save_file({k: (v.half() if k in ("sample", "encoder_hidden_states", "timestep_cond") else v)
                   for k, v in io.items()}, os.path.join(folder, "io.safetensors"))
        print(name, f"{sum(v.numel() for v in sd.values())} parameters, |out| max {io['out'].abs().max():.4f}, "
              f"std {io['out'].std():.4f}")
        if name == "sd1":
            ldm = to_ldm_names(sd, CONFIGS[name])
            back = convert_ldm_unet_checkpoint(dict(ldm), dict(model.config))  # diffusers' own LDM -> diffusers
            assert back.keys() == sd.keys(), sorted(set(back) ^ set(sd))
            assert all(torch.equal(back[k], v) for k, v in sd.items())
            save_file(ldm, os.path.join(OUT, "sd1_ldm.safetensors"))
    total = 0
    for root, _, files in os.walk(OUT):
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
            total += os.path.getsize(os.path.join(root, f))
    print(f"fixtures {total} bytes")


if __name__ == "__main__":
    main()
