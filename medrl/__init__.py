"""medrl: SFT and GRPO fine-tuning of small language models on medical question answering."""

from medrl.utils.config import register_resolvers

__version__ = "0.1.0"

register_resolvers()
