#!/usr/bin/env python3
"""Checks the engine's include graph against its layers (DESIGN.md, "Layout and dependency direction"):

    core <- samplers, data <- eval <- diffusion <- adapters, gan <- distill <- studio (<- cli, gui)

A file may include headers of its own layer and of the layers below it; only studio/gui/ may include
ImGui, GLFW or OpenGL. Prints every violation as `file:line: ...`, then one summary line; exits 1 if any.

    scripts/check_layers.py [ROOT]               ROOT: the repository (default: the parent of scripts/)
    scripts/check_layers.py --self-test [ROOT]   first checks the checker on a tiny temporary tree
"""
import re
import sys
import tempfile
from pathlib import Path

# Each layer and the layers below it that it may include (besides itself).
BELOW = {"core": [], "samplers": ["core"], "data": ["core"], "eval": ["core", "data"]}
BELOW["diffusion"] = ["core", "samplers", "data", "eval"]
BELOW["adapters"] = BELOW["gan"] = BELOW["diffusion"] + ["diffusion"]
BELOW["distill"] = BELOW["adapters"] + ["adapters", "gan"]
BELOW["studio"] = BELOW["distill"] + ["distill"]
BELOW["studio/cli"] = BELOW["studio/gui"] = BELOW["studio"] + ["studio"]
FOLDERS = sorted({layer.split("/")[0] for layer in BELOW})

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')
INC = "#" + "include "  # spelled apart, so text searches for UI includes do not match this script
UI_HEADER = re.compile(r"^(imgui|GLFW/|GL/|backends/imgui_impl_)")


def layer_of(path):
    """The layer of a repository-relative path such as "studio/gui/main.cpp", or None."""
    parts = path.split("/")
    if parts[0] not in FOLDERS or len(parts) < 2:
        return None
    nested = "/".join(parts[:2])
    return nested if nested in BELOW and len(parts) > 2 else parts[0]


def check(root):
    """Returns (violations, files scanned, includes checked)."""
    violations, files, includes = [], 0, 0
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".h", ".cpp") or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            layer = layer_of(rel)
            files += 1
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                includes += 1
                quote, header = m.groups()
                shown = f'"{header}"' if quote == '"' else f"<{header}>"
                if UI_HEADER.match(header) and layer != "studio/gui":
                    violations.append(f"{rel}:{number}: {layer} may not include {shown} "
                                      "(ImGui/GLFW/OpenGL belong to studio/gui/ only)")
                other = layer_of(header) if quote == '"' else None
                if other is None or other == layer or other in BELOW[layer]:
                    continue
                relation = "sits below" if layer in BELOW[other] else "sits beside"
                violations.append(f"{rel}:{number}: {layer} may not include {shown} ({layer} {relation} {other})")
    return violations, files, includes


def self_test():
    """An upward include and a misplaced ImGui include are flagged; the legal ones next to them are not."""
    tree = {
        "core/tensor_io.h": '#include <string>\n#include "diffusion/dit.h"\n',
        "diffusion/dit.h": '#include "core/tensor_io.h"\n',
        "studio/gui/main.cpp": '#include "studio/runner.h"\n' + INC + "<imgui.h>\n",
        "studio/runner.h": '#include "distill/pso.h"\n' + INC + "<GLFW/glfw3.h>\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in tree.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_text(text)
        violations, files, includes = check(Path(tmp))
    expected = ['core/tensor_io.h:2: core may not include "diffusion/dit.h" (core sits below diffusion)',
                "studio/runner.h:2: studio may not include <GLFW/glfw3.h> "
                "(ImGui/GLFW/OpenGL belong to studio/gui/ only)"]
    if (violations, files, includes) != (expected, 4, 7):
        sys.exit(f"check_layers self-test failed: {files} files, {includes} includes, violations {violations}")


def main(args):
    if "--self-test" in args:
        args.remove("--self-test")
        self_test()
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    violations, files, includes = check(root)
    if files == 0:
        sys.exit(f"check_layers: no engine sources under {root}")
    for v in violations:
        print(v)
    print(f"layers: {files} files, {includes} includes checked, {len(violations)} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
