#!/usr/bin/env python3
"""Writes the seed corpora of the job-JSON and image-decoding fuzz targets (tests/fuzz/corpus/).

    python -m venv /tmp/v && /tmp/v/bin/pip install pillow && /tmp/v/bin/python scripts/make_fuzz_seeds.py

Images: tiny PNG (RGB, grey+alpha, palette, 16-bit), JPEG (baseline, progressive), BMP, GIF, TGA and PNM
written by Pillow. Job JSON: the shipped job files plus a few documents that exercise every field kind.
"""
import io
import json
import pathlib
import shutil

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def images():
    out = CORPUS / "fuzz_image_decode"
    out.mkdir(parents=True, exist_ok=True)
    rgb = Image.new("RGB", (7, 5))
    for x in range(7):
        for y in range(5):
            rgb.putpixel((x, y), (x * 36, y * 50, (x + y) * 20))
    cases = {
        "rgb.png": (rgb, "PNG", {}),
        "la.png": (rgb.convert("LA"), "PNG", {}),
        "palette.png": (rgb.convert("P"), "PNG", {}),
        "grey16.png": (rgb.convert("I;16"), "PNG", {}),
        "baseline.jpg": (rgb, "JPEG", {"quality": 80}),
        "progressive.jpg": (rgb, "JPEG", {"quality": 60, "progressive": True}),
        "rgb.bmp": (rgb, "BMP", {}),
        "palette.gif": (rgb.convert("P"), "GIF", {}),
        "rgb.tga": (rgb, "TGA", {}),
        "rgb.ppm": (rgb, "PPM", {}),
    }
    for name, (image, fmt, options) in cases.items():
        buf = io.BytesIO()
        image.save(buf, fmt, **options)
        (out / name).write_bytes(buf.getvalue())


def jobs():
    out = CORPUS / "fuzz_job_json"
    out.mkdir(parents=True, exist_ok=True)
    for job in sorted((ROOT / "assets" / "jobs").glob("*.json")):
        shutil.copy(job, out / job.name)
    docs = {
        "fields.json": {"steps": 3, "lr": 0.5, "flag": True, "sampler": "euler", "mode": "exact",
                        "classes": ["a", "b"], "weights": [0.5, -1], "sizes": [16, 64], "model": "m.safetensors",
                        "output": "o.safetensors", "extra": {"k": [1, {"n": None}]}},
        "wrong_types.json": {"steps": "3", "lr": [1], "mode": "slow", "classes": [1], "output": "../x"},
        "override.json": "lr=1e400\n",
    }
    for name, doc in docs.items():
        text = doc if isinstance(doc, str) else json.dumps(doc)
        (out / name).write_text(text)


if __name__ == "__main__":
    images()
    jobs()
