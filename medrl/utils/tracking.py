"""Experiment-tracker housekeeping shared by the entry points and the sweep callbacks."""

from __future__ import annotations

import sys


def close_wandb_run(failed: bool) -> None:
    """Finish the job's W&B run, if one is open, so the next job of a sweep starts its own run
    instead of merging into this one. Imports wandb only when something already has."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)
