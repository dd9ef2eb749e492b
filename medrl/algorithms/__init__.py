"""Training algorithms: pure math (losses, GRPO core) and the LightningModules that use it."""
