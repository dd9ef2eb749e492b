"""What one benchmark run needs, as plain data a subprocess can read, and the run schedule.

The parent process composes conf/bench.yaml, loads the prompts once and writes one `BenchTask`
per run (JSON); each worker rebuilds its objects from the task's resolved config, so both
systems read the same model folder, records and rendered prompt strings.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medrl.data.records import QARecord

KINDS = ("grpo", "sft", "rollout")
MODES = ("grpo", "sft", "rollout", "scaling", "all")
# The systems each kind compares, medrl first; "hf" is plain `model.generate`.
SYSTEMS = {"grpo": ("medrl", "trl"), "sft": ("medrl", "trl"), "rollout": ("medrl", "hf")}
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class BenchTask:
    """One run of one system in its own process.

    config:   the resolved bench config (a plain container; no interpolations left).
    records:  the QARecords the prompts were rendered from (asdict form).
    prompts:  the rendered prompts, the same strings for every system.
    warmup / steps: unmeasured, then measured steps of this run.
    """

    kind: str
    system: str
    label: str
    config: dict[str, Any]
    records: list[dict[str, Any]]
    prompts: list[str]
    warmup: int
    steps: int
    round: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> BenchTask:
        return cls(**json.loads(path.read_text()))

    def qa_records(self) -> list[QARecord]:
        return [QARecord(**record) for record in self.records]

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


def record_dict(record: QARecord) -> dict[str, Any]:
    """A QARecord as JSON-ready data (mappings become plain dicts)."""
    data = asdict(record)
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def resolve_device(name: str) -> str:
    """auto -> cuda when torch sees a GPU, else cpu; cuda without a GPU is an error."""
    import torch

    if name not in DEVICES:
        raise ValueError(f"device={name!r}; valid: {list(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA device; use device=auto or cpu")
    return name


def plan_rounds(steps: int, rounds: int) -> tuple[int, int]:
    """(rounds, measured steps per run): `steps` measured steps per system over `rounds` runs.

    Rounds never exceed the steps (each run measures at least one), and a remainder rounds the
    steps per run up, so at least `steps` steps are measured.
    """
    if steps < 1 or rounds < 1:
        raise ValueError(f"steps={steps} and rounds={rounds} must be >= 1")
    rounds = min(rounds, steps)
    return rounds, math.ceil(steps / rounds)


def schedule(systems: tuple[str, ...], rounds: int) -> list[tuple[int, str]]:
    """(round, system) in run order: medrl, trl, medrl, trl, ... (alternating by round)."""
    return [(r, system) for r in range(rounds) for system in systems]


def module_kwargs(target: Any, partial: Any, **extra: Any) -> dict[str, Any]:
    """The complete keyword arguments `target` gets from a Hydra `_partial_` config: its
    signature's defaults, then the config's values, then `extra` (what a stage runner adds)."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(target).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **partial.keywords, **extra}


def grpo_kwargs(cfg: Any) -> dict[str, Any]:
    """GRPOModule's settings from cfg.grpo.module, every settings dataclass built."""
    from hydra.utils import instantiate

    from medrl.algorithms.grpo import (
        AdvantageSettings,
        ClipSettings,
        DynamicSampling,
        EntropySettings,
        GRPOModule,
        KLSettings,
        SequenceClipSettings,
    )
    from medrl.rollout import EngineSettings, SamplingSettings

    kwargs = module_kwargs(GRPOModule, instantiate(cfg.grpo.module), seed=int(cfg.seed))
    fill = {
        "sampling": SamplingSettings,
        "engine": EngineSettings,
        "advantage": AdvantageSettings,
        "clip": ClipSettings,
        "sequence_clip": SequenceClipSettings,
        "entropy": EntropySettings,
        "kl": KLSettings,
        "dynamic_sampling": DynamicSampling,
    }
    for key, cls in fill.items():
        if kwargs.get(key) is None:
            kwargs[key] = cls()
    return kwargs


def sft_kwargs(cfg: Any) -> dict[str, Any]:
    """SFTModule's settings from cfg.sft.module."""
    from hydra.utils import instantiate

    from medrl.algorithms.sft import SFTModule

    return module_kwargs(SFTModule, instantiate(cfg.sft.module))
