"""Hydra entry point: `python -m medrl.train [overrides]` (`--cfg job` prints the composition).

The run: compose the config, check that every requested stage exists, seed, instantiate the
components in one place (medrl.components), then run the stages in order.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from medrl.components import build_specs
from medrl.utils.config import CONFIG_DIR

log = logging.getLogger(__name__)

# Stage name -> runner. Runners arrive with their issues (sft, grpo, eval); until a stage is
# registered here, asking for it fails at once, before any data or weights load.
STAGE_RUNNERS: dict[str, object] = {}


def check_stages(stages: list[str]) -> None:
    unknown = [stage for stage in stages if stage not in STAGE_RUNNERS]
    if unknown:
        available = sorted(STAGE_RUNNERS) or "none yet"
        raise ValueError(
            f"stages={list(stages)}: no runner for {unknown}; available stages: {available}"
        )


def run(cfg: DictConfig) -> float | None:
    check_stages(list(cfg.stages))
    specs = build_specs(cfg)
    log.info("run specs: %s", specs)
    log.info("resolved config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    return None


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
