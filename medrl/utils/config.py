"""OmegaConf resolvers and small helpers shared by every Hydra entry point."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    """Register medrl's resolvers once; safe to call from every entry point and test."""
    if not OmegaConf.has_resolver("medrl_root"):
        # `${medrl_root:}` lets conf/paths point at ../shared without relying on the cwd.
        OmegaConf.register_new_resolver("medrl_root", lambda: str(PROJECT_ROOT))
