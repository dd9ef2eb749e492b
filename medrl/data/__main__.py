"""``python -m medrl.data dataset=<name>`` (console script ``medrl-data``): build a dataset's pools
and print where they came from, their sizes and label distributions, and the overlap check.

Exit status: 0 when the pools are disjoint; 1 when any pair of pools overlaps by id or question
text; 2 when the data cannot be read or cut as configured (the DataError message is printed).
Configured by conf/data.yaml, which writes no output folder and no log file.
"""

from __future__ import annotations

import sys

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console

# Importing any medrl module runs medrl/__init__.py, which registers ${medrl_root:} (conf/paths).
from medrl.data.errors import DataError
from medrl.data.mixture import load_dataset
from medrl.data.report import print_summary
from medrl.utils.config import CONFIG_DIR

EXIT_OVERLAP = 1
EXIT_DATA_ERROR = 2


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="data")
def main(cfg: DictConfig) -> None:
    """Load ``cfg.dataset``'s pools, print the summary; exit non-zero on overlap or bad data."""
    # Piped output (logs, CI) would otherwise be cut to 80 columns and fold the tables.
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        pools = load_dataset(instantiate(cfg.dataset))
    except DataError as error:
        console.print(f"[bold red]data error:[/] {error}", highlight=False, soft_wrap=True)
        raise SystemExit(EXIT_DATA_ERROR) from error
    print_summary(pools.summary, console)
    if pools.summary.max_overlap:
        raise SystemExit(EXIT_OVERLAP)


if __name__ == "__main__":
    main()
