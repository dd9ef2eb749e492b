"""Policy models: specs (conf/model, conf/adapter), materialization and loading."""

from medrl.models.loading import Policy, apply_adapter, load_policy, load_tokenizer, resolve_dtype
from medrl.models.materialize import ModelLoadError, materialize
from medrl.models.spec import AdapterSpec, FullFinetune, LoraAdapter, ModelSpec, QLoraAdapter

__all__ = [
    "AdapterSpec",
    "FullFinetune",
    "LoraAdapter",
    "ModelLoadError",
    "ModelSpec",
    "Policy",
    "QLoraAdapter",
    "apply_adapter",
    "load_policy",
    "load_tokenizer",
    "materialize",
    "resolve_dtype",
]
