"""`python -m medrl.bench`: medrl's GRPO / SFT step and rollout against TRL and plain generate.

Both systems get the same model, adapter, rendered prompts, reward function, sampling, loss
conventions, dtype and threads; each run is a fresh subprocess (so peak RSS is per system) and
runs alternate (medrl, TRL, medrl, TRL, ...) so that drift of the machine hits both. The same
instrumentation (medrl.bench.instrument) times the phases of either system's step from outside.

Modules: settings (config -> plain settings, device), trl_settings (medrl settings -> TRL
config kwargs, pure), instrument (the phase clock), medrl_side / trl_side / hf_side (one
worker per system), worker (the subprocess entry), stats, report, runner (the orchestration).
"""
