"""Turn a ModelSpec into something `from_pretrained` can read: a hub id or a local folder.

GGUF files (one file, or one joined from parts: medrl/models/gguf_source.py) and tiny random
models are written once into a cache folder keyed by a hash of what defines them, so later loads
are plain safetensors reads and every source shares one load path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from medrl.models.errors import ModelLoadError
from medrl.models.gguf_source import find_gguf_file, gguf_digest, gguf_sources, join_gguf_parts
from medrl.models.spec import ModelSpec
from medrl.utils.io import atomic_directory

__all__ = ["ModelLoadError", "find_gguf_file", "gguf_cache_dir", "materialize"]


def materialize(spec: ModelSpec) -> str:
    """Return a hub id or local folder holding the spec's weights and tokenizer.

    For `gguf` and `tiny_random` the folder is created on first use under spec.cache_dir.
    """
    if spec.source == "pretrained":
        return str(spec.path)
    if spec.source == "checkpoint":
        return str(Path(str(spec.path)) / "merged")
    if spec.source == "gguf":
        return str(_materialize_gguf(spec))
    return str(_cached(_tiny_cache_dir(spec), lambda out: _build_tiny(spec, out)))


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
    """Where the GGUF model of `spec` is (or will be) converted: named by the GGUF file's
    content hash, so another GGUF file never reuses a stale conversion, and by the dtype the
    weights are stored in when it is not float32. Checks the parts and hashes them; loads
    nothing, joins nothing."""
    return _gguf_folder(spec, gguf_digest(gguf_sources(spec)))


def conversion_dtype(spec: ModelSpec) -> str:
    """The dtype a GGUF model is stored in: `model.dtype` when it names a half-precision type,
    else float32 (`auto` picks per device at load time, so the cache must hold full precision).

    A bfloat16 model loads the very weights a float32 conversion would give after its cast (the
    dequantized values are rounded once either way) with half the disk, load time and, while
    converting, memory: converting a 1.5B model in float32 holds two 7 GB copies.
    """
    return spec.dtype if spec.dtype in ("bfloat16", "float16") else "float32"


def _gguf_folder(spec: ModelSpec, digest: str) -> Path:
    dtype = conversion_dtype(spec)
    suffix = "" if dtype == "float32" else f"-{dtype}"  # float32 folders keep their old names
    return Path(str(spec.cache_dir)) / "models" / f"{spec.name}-{digest[:12]}{suffix}"


def joined_gguf_path(spec: ModelSpec, digest: str) -> Path:
    """Where a GGUF file split into parts is joined: the cache's gguf/ folder, named by the
    joined file's content hash (kept after conversion; delete it to free the disk)."""
    return Path(str(spec.cache_dir)) / "gguf" / f"{spec.name}-{digest[:12]}.gguf"


def _materialize_gguf(spec: ModelSpec) -> Path:
    """Check the GGUF source (before anything expensive), then, on first use only, join its
    parts into one file and convert that file into the cache folder."""
    sources = gguf_sources(spec)
    digest = gguf_digest(sources)

    def build(out: Path) -> None:
        if spec.gguf_parts:
            gguf_path = join_gguf_parts(sources, joined_gguf_path(spec, digest))
        else:
            gguf_path = sources[0]
        _convert_gguf(gguf_path, conversion_dtype(spec), out)
        _record_source(spec, digest, gguf_path, out)

    return _cached(_gguf_folder(spec, digest), build)


def _convert_gguf(gguf_path: Path, dtype: str, out: Path) -> None:
    """Dequantize a GGUF file and save it as a regular safetensors model folder in `dtype`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # dequantize=True: dense weights always. Without it transformers keeps the blocks packed
    # wherever a matmul kernel can be had (fetched from the Hub), and those cannot be copied
    # into a plain model.
    loaded = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch_dtype, quantization_config=GgufConfig(dequantize=True)
    )
    # The GGUF-loaded model carries a gguf quantization_config and cannot be saved as is:
    # rebuild a plain model from its config and copy the dequantized weights in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    del loaded  # one copy of the weights in memory while saving, not two
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _record_source(spec: ModelSpec, digest: str, gguf_path: Path, out: Path) -> None:
    """medrl_source.json: what the folder was converted from, for whoever finds it later."""
    source = {
        "gguf_package": spec.gguf_package,
        "gguf_file": spec.gguf_file,
        "gguf_parts": spec.gguf_parts,
        "gguf_sha256": digest,
        "gguf_bytes": gguf_path.stat().st_size,
        "dtype": conversion_dtype(spec),
    }
    (out / "medrl_source.json").write_text(json.dumps(source, indent=2))


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
