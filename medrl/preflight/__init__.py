"""Preflight: checks that run before any model weights load, so a misconfigured run fails in
seconds with one error naming every config key to fix, not after an hour of training.

`preflight_config(cfg)` checks the config's own values before anything is instantiated;
`run_preflight(cfg, specs, pools)` repeats them with the specs and the pools, then checks the
pools, the reward set on a real row, and prompt lengths against the model's context (tokenizer
only), shows the prompts, and writes preflight.json. `preflight.enabled=false` skips both.
"""

from medrl.preflight.model import ModelProbe, preflight_tokenizer, probe_model
from medrl.preflight.report import (
    CheckResult,
    PreflightError,
    PreflightReport,
    RenderedPrompt,
)
from medrl.preflight.runner import (
    PreflightSettings,
    config_checks,
    preflight_config,
    preflight_settings,
    run_preflight,
)

__all__ = [
    "CheckResult",
    "ModelProbe",
    "PreflightError",
    "PreflightReport",
    "PreflightSettings",
    "RenderedPrompt",
    "config_checks",
    "preflight_config",
    "preflight_settings",
    "preflight_tokenizer",
    "probe_model",
    "run_preflight",
]
