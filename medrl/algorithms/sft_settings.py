"""The `sft` block's settings and their one validation, shared by the stage, the module and
preflight.

`sft_problems(values, world_size)` checks the whole block (conf/sft/): the stage's keys (batch,
sequence length, schedule, validation slice), the module's optimizer keys (keyed below
`module`), and (given the number of processes) that the global batch splits over them.
SFTModule checks its own keys with `sft_module_problems` when built, the stage runner raises on
`sft_problems` before any weights load, and preflight (medrl/preflight/values.py) reports the
same problems, keyed as the config spells them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medrl.algorithms.optim import OPTIMIZER_RULES
from medrl.utils.config import config_values
from medrl.utils.settings import (
    Problem,
    Rule,
    apply_rules,
    count_rule,
    fraction_rule,
    is_count,
    non_negative,
    sub_block,
)

# The config key of the SFT block: problems are keyed below it.
SFT_KEY = "sft"
# SFTModule's defaults: the values conf/sft/default.yaml writes, their one definition.
MODULE_DEFAULTS = config_values("sft/default", "module")


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_interval(v: Any) -> bool:
    """Lightning's val_check_interval: a fraction of an epoch (float in (0, 1]), a number of
    batches (int >= 1), null (once per epoch), or a time ("DD:HH:MM:SS" or a mapping such as
    {minutes: 30}; Lightning checks those)."""
    if isinstance(v, float):
        return 0 < v <= 1
    return v is None or isinstance(v, (str, Mapping)) or is_count(v, 1)


STAGE_RULES: tuple[Rule, ...] = (
    ("batch_size", *count_rule(1, "the global batch, split over the processes")),
    ("grad_accum", *count_rule(1, "batches per optimizer step")),
    (
        "grad_clip",
        lambda v: v is None or non_negative(v),
        "must be a number >= 0 (the gradient's norm bound), or 0 / null for none",
    ),
    ("max_seq_length", *count_rule(1, "tokens per example")),
    ("epochs", *count_rule(0, "passes over the pool")),
    ("max_steps", _integer, "must be an integer (optimizer steps; <= 0: train by epochs)"),
    ("val_fraction", *fraction_rule("the held-out fraction of the SFT pool")),
    (
        "val_check_interval",
        _check_interval,
        "must be a fraction of an epoch in (0, 1] (a float), a number of batches >= 1, null "
        '(once per epoch) or a time ("DD:HH:MM:SS" or e.g. {{minutes: 30}})',
    ),
    ("num_workers", *count_rule(0, "data-loading processes; 0 = in the main process")),
)


def sft_module_problems(values: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with SFTModule's settings (keys as sft.module names them)."""
    return apply_rules(OPTIMIZER_RULES, values)


def sft_problems(values: Mapping[str, Any], world_size: int | None = None) -> list[Problem]:
    """Every problem of the `sft` block `values` (raw config values), keyed below `sft`; with
    `world_size`, also whether the global batch splits over the processes (None: not known
    yet, not checked)."""
    module, not_a_block = sub_block(values, "module")
    problems = not_a_block + apply_rules(STAGE_RULES, values)
    if not not_a_block:
        problems += [p.under("module") for p in sft_module_problems(module)]
    problems += _schedule(values)
    batch = values.get("batch_size")
    if world_size is not None and is_count(batch, 1) and batch % world_size:
        problems.append(
            Problem(
                "batch_size",
                batch,
                f"is the global batch and must be a multiple of the {world_size} processes "
                "(trainer.devices x trainer.num_nodes): each takes an equal part; e.g. "
                f"{max(world_size, batch - batch % world_size)}",
            )
        )
    return problems


def _schedule(values: Mapping[str, Any]) -> list[Problem]:
    """sft.max_steps > 0 trains by optimizer steps; otherwise by sft.epochs, which must then
    be >= 1 or nothing trains."""
    epochs, max_steps = values.get("epochs"), values.get("max_steps")
    if not (_integer(epochs) and _integer(max_steps)) or max_steps > 0 or epochs >= 1:
        return []  # a non-integer is its own rule's problem
    return [
        Problem(
            "epochs",
            epochs,
            f"with {{prefix}}max_steps={max_steps} SFT would not train; set {{prefix}}epochs "
            ">= 1 or {prefix}max_steps > 0",
        )
    ]
