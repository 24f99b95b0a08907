#!/usr/bin/env python3
"""Writes the CLIP text-side parity fixtures to tests/fixtures/clip_text/ (read by tests/test_clip_text.cpp).

Tokenizer (tokens.json)
  transformers' CLIPTokenizer built on the shipped vocabulary assets/text/bpe_simple_vocab_16e6.txt.gz
  (vocab and merges derived from it exactly as open_clip's SimpleTokenizer does: 256 byte symbols,
  the same with "</w>", the first 48,894 merges, <|startoftext|>, <|endoftext|>) encodes a list of hard
  strings. For each: `ids` (add_special_tokens=False), `row` (padding="max_length", truncation=True,
  max_length=77, pad <|endoftext|> as SD1), `row_pad0` (the same row with the padding positions, those
  of attention_mask 0, set to id 0 as SD2/OpenCLIP pad) and `decoded` (decode(ids)). SD2's tokenizer
  files name "!" (id 0) as pad token; a CLIPTokenizer built with pad_token="!" also registers "!" as an
  added token and so splits every "!" out of the text before BPE ("!!!" -> 0 0 0 instead of 995); the
  C++ tokenizer treats the pad id as padding only, so that variant is not the reference here.

  Which text cleanup the reference applies: transformers 5 has only the `tokenizers`-backed CLIPTokenizer
  (the former pure-Python "slow" class is gone). It normalises NFC, replaces every run of whitespace with
  one space, lowercases code point by code point (no final-sigma rule), then keeps the matches of CLIP's
  regex (<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^\\s\\p{L}\\p{N}]+); the
  literal special tokens, case-sensitive, are matched before any of that. It never uses ftfy. The
  transformers 4 slow tokenizer and OpenAI/open_clip's SimpleTokenizer differ on some strings: with ftfy
  installed they run ftfy.fix_text (mojibake repair, compatibility fixes such as curly quotes) and
  html.unescape twice before whitespace cleanup and Python's str.lower(); the transformers 4 slow class
  without ftfy instead ran BERT's BasicTokenizer (control characters dropped, every CJK ideograph made a
  word of its own). `ftfy_installed` records whether ftfy was importable here (it is not needed by the
  reference above).

Text encoders (model_{a,b}.safetensors + config_{a,b}.json, io.safetensors, ldm_openclip_b.safetensors)
  Two tiny random transformers CLIPTextModel configs (vocab 256, hidden 32, intermediate 64, 4 heads,
  77 positions): "a" 3 layers quick_gelu with the legacy eos_token_id 2 (pooled at argmax(ids), as the
  SD1 text encoder's config), "b" 2 layers gelu with eos_token_id 255 (pooled at the first eot).
  Every parameter is redrawn from N(0, 0.05) (LayerNorm weights 1 + N(0, 0.05)) and rounded to float16;
  weights are stored as float16, references computed in float32 from exactly those values.
  io.safetensors: ids_{a,b} [2, 16] int64 (bos 254 ... eot 255, then padding: 255 for "a", 0 for "b"),
  and for each model last_{x} (last_hidden_state), skip1_{x} (hidden_states[-2] through
  final_layer_norm, diffusers' clip_skip=1), pooled_{x} (pooler_output), all float32.
  ldm_openclip_b.safetensors: model "b" in the SD2 single-file OpenCLIP names under
  "cond_stage_model.model." (in_proj_weight/bias = q;k;v stacked, ln_1/ln_2, mlp.c_fc/c_proj,
  token_embedding.weight, positional_embedding, ln_final) plus one extra resblock and text_projection
  that the 2-layer model does not use (as SD2 files hold 24 blocks for diffusers' 23); checked against
  diffusers' own convert_open_clip_checkpoint.
  The LDM SD1 single-file names are model "a" under "cond_stage_model.transformer."; the test builds that
  file itself.

Key lists (keys_sd15.json, keys_sd21.json): {name: shape} of the SD1 (CLIP ViT-L/14 text, 12 layers) and
SD2 (OpenCLIP ViT-H text, 23 layers) CLIPTextModel, built on the meta device.

Usage: /work/fixtures-venv/bin/python scripts/make_clip_text_fixtures.py
"""
import gzip
import importlib.util
import json
import os

import torch
import transformers
from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "clip_text")
VOCAB = os.path.join(ROOT, "assets", "text", "bpe_simple_vocab_16e6.txt.gz")

HARD_STRINGS = [
    "a photo of an astronaut riding a horse on mars",
    "",
    "   ",
    "   leading and trailing   spaces   ",
    "tabs\tand\nnewlines\r\n and\u00a0nbsp\u3000ideographic\u2003em space",
    "Café crème brûlée, naïve façade — Ångström",
    "e\u0301 decomposed vs \u00e9 composed, q\u0303 has no precomposed form",
    "日本語のテキスト、中文字符串。한국어 문장",
    "emoji 👍🏽🎨🔥 and a ZWJ sequence 👩‍💻!",
    "punctuation!!! ??? ... ,,, ;;; --- ((())) [[x]] {y} <z> @#$%^&* ~`|\\/",
    "contractions: don't can't I'm you're we've they'll he'd it's ISN'T O'Neil ''quoted''",
    "numbers 1234567890 3.14159 1,000,000 ½ ² ٣٤ Ⅻ",
    "UPPER lower MiXeD ΣΟΦΟΣ İstanbul STRASSE straße ǅ",
    "<|startoftext|>specials<|endoftext|> inside <|ENDOFTEXT|> text",
    "html &amp; entities &lt;3 and ’curly’ “quotes”",
    "control\x07chars\x00here\x1b[0m",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "ﬁne ligatures ﬀ and 𝐦𝐚𝐭𝐡 letters",
    "masterpiece, best quality, ultra-detailed, 8k, a majestic lion standing on a cliff at sunset, "
    "golden hour lighting, volumetric fog, intricate fur details, by greg rutkowski and alphonse mucha, "
    "trending on artstation, octane render, cinematic composition, dramatic clouds, lens flare, "
    "highly detailed background with mountains and a river, photorealistic, sharp focus, 35mm",
    "word " * 80,
]

TINY = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_attention_heads=4,
            max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=254, pad_token_id=1)
CONFIGS = {
    "a": dict(TINY, num_hidden_layers=3, hidden_act="quick_gelu", eos_token_id=2),
    "b": dict(TINY, num_hidden_layers=2, hidden_act="gelu", eos_token_id=255),
}
PAD = {"a": 255, "b": 0}


def bytes_to_unicode():
    """CLIP/GPT-2's byte -> printable code point table, in vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_tokenizer(**kwargs):
    lines = gzip.open(VOCAB).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    assert len(merges) == 48894
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, **kwargs)


def tokenizer_fixture():
    tok = build_tokenizer()
    cases = []
    for text in HARD_STRINGS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        enc = tok(text, padding="max_length", truncation=True, max_length=77)
        row = enc["input_ids"]
        row0 = [i if m else 0 for i, m in zip(row, enc["attention_mask"])]
        assert len(row) == 77 and len(row0) == 77
        cases.append({"text": text, "ids": ids, "row": row, "row_pad0": row0, "decoded": tok.decode(ids)})
    assert any(len(c["ids"]) > 75 for c in cases)
    return {
        "reference": f"transformers {transformers.__version__} {type(tok).__name__} "
        f"({'tokenizers backend' if tok.is_fast else 'python'})",
        "ftfy_installed": importlib.util.find_spec("ftfy") is not None,
        "context_length": 77,
        "cases": cases,
    }


def build_model(name):
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(**CONFIGS[name])).eval()
    g = torch.Generator().manual_seed(100 + ord(name))
    with torch.no_grad():
        for key, p in model.named_parameters():
            noise = 0.05 * torch.randn(p.shape, generator=g)
            p.copy_((1.0 + noise) if "layer_norm" in key and key.endswith(".weight") else noise)
            p.copy_(p.half().float())
    return model


def input_ids(name):
    g = torch.Generator().manual_seed(7 + ord(name))
    ids = torch.full((2, 16), PAD[name], dtype=torch.int64)
    for row, length in enumerate((9, 13)):
        ids[row, 0] = 254
        ids[row, 1 : length - 1] = torch.randint(3, 254, (length - 2,), generator=g)
        ids[row, length - 1] = 255
    return ids


def to_openclip(sd, layers, extra):
    """transformers CLIPTextModel keys -> the SD2 single-file OpenCLIP names; `extra` adds unused tensors."""
    p = "cond_stage_model.model."
    out = {
        p + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        p + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        p + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        p + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
    }
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                out[dst + theirs + "." + kind] = sd[src + ours + "." + kind]
        for kind in ("weight", "bias"):
            out[dst + "attn.in_proj_" + kind] = torch.cat(
                [sd[src + f"self_attn.{x}_proj.{kind}"] for x in "qkv"]).contiguous()
    out.update(extra)
    return out


def key_shapes(**config):
    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig(**config))
    return {"text_model." + k: list(v.shape) for k, v in model.state_dict().items()}


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_fixture(), f, ensure_ascii=False, separators=(",", ":"))

    io = {}
    for name in CONFIGS:
        model = build_model(name)
        # transformers 5 drops the "text_model." prefix of the module tree; checkpoints in the wild
        # (transformers 4, diffusers' text_encoder folders) carry it, and so do the fixtures.
        sd = {"text_model." + k: v.detach().contiguous() for k, v in model.state_dict().items()}
        half = {k: v.half() for k, v in sd.items()}
        save_file(half, os.path.join(OUT, f"model_{name}.safetensors"))
        with open(os.path.join(OUT, f"config_{name}.json"), "w") as f:
            f.write(model.config.to_json_string())
        ids = input_ids(name)
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
            hidden = out.hidden_states
            assert len(hidden) == CONFIGS[name]["num_hidden_layers"] + 1
            assert torch.allclose(model.final_layer_norm(hidden[-1]), out.last_hidden_state)
            skip1 = model.final_layer_norm(hidden[-2])
        io[f"ids_{name}"] = ids
        io[f"last_{name}"] = out.last_hidden_state.contiguous()
        io[f"skip1_{name}"] = skip1.contiguous()
        io[f"pooled_{name}"] = out.pooler_output.contiguous()
        if name == "b":
            layers = CONFIGS[name]["num_hidden_layers"]
            g = torch.Generator().manual_seed(3)
            extra = {k.replace("resblocks.0.", f"resblocks.{layers}."): (0.05 * torch.randn(v.shape, generator=g)).half()
                     for k, v in to_openclip(half, 1, {}).items() if ".resblocks.0." in k}
            extra["cond_stage_model.model.text_projection"] = (0.05 * torch.randn(32, 32, generator=g)).half()
            openclip = to_openclip(half, layers, extra)
            back = convert_open_clip_checkpoint(model, {k.replace(f"resblocks.{layers}.", "resblocks.23."): v
                                                        for k, v in openclip.items()})
            back.pop("text_model.embeddings.position_ids", None)
            assert back.keys() == half.keys(), set(back) ^ set(half)
            assert all(torch.equal(back[k], v) for k, v in half.items())
            save_file(openclip, os.path.join(OUT, "ldm_openclip_b.safetensors"))
    save_file(io, os.path.join(OUT, "io.safetensors"))

    sd15 = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, hidden_act="quick_gelu")
    sd21 = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, hidden_act="gelu")
    for name, config in (("sd15", sd15), ("sd21", sd21)):
        with open(os.path.join(OUT, f"keys_{name}.json"), "w") as f:
            json.dump(key_shapes(**config), f, separators=(",", ":"))

    for f in os.listdir(OUT):
        os.chmod(os.path.join(OUT, f), 0o644)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"fixtures {total} bytes; ftfy installed: {importlib.util.find_spec('ftfy') is not None}")
    for name in CONFIGS:
        print(name, "last |.|max", io[f"last_{name}"].abs().max().item(), "pooled |.|max",
              io[f"pooled_{name}"].abs().max().item())


if __name__ == "__main__":
    main()
