"""Hydra entry point: `python -m medrl.bench [mode=grpo|sft|rollout|scaling|all] [key=value ...]`
(`make bench ARGS="..."`); conf/bench.yaml names every setting. See medrl.bench.runner."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from medrl.bench.runner import run
from medrl.utils.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="bench")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
