"""Suite-wide guarantees: no test reaches the network, and W&B never tries to log in."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Set before transformers / datasets / wandb are imported anywhere in the suite.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from medrl.utils.config import PROJECT_ROOT  # noqa: E402

SHARED_DIR = Path(os.environ.get("MEDRL_SHARED_DIR", PROJECT_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (or MEDRL_SHARED_DIR): real data and the Qwen3 tokenizer."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared folder not found at {SHARED_DIR}; set MEDRL_SHARED_DIR")
    return SHARED_DIR


@pytest.fixture
def compose(tmp_path):
    """compose(config_name, overrides) -> a fully resolvable config, as `python -m` would build.

    The Hydra runtime node is registered and paths.output_dir points into tmp_path, so every
    interpolation (hydra:runtime.output_dir included) resolves without running a job.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from medrl.utils.config import CONFIG_DIR

    def _compose(config_name: str = "train", overrides: list[str] | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=overrides or [], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            if "paths" in cfg:
                cfg.paths.output_dir = str(tmp_path / "run")
            del cfg["hydra"]
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def tiny_spec(compose, shared_dir, tmp_path_factory):
    """The tiny_qwen3 ModelSpec from conf/, cached in a per-session folder."""
    from hydra.utils import instantiate

    spec = instantiate(compose("train", ["model=tiny_qwen3"]).model)
    spec.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
    return spec


@pytest.fixture(scope="session")
def tiny_policy(shared_dir, tmp_path_factory):
    """conf/model/tiny_qwen3 (random weights, real Qwen3 tokenizer and chat template), built
    into a session cache and loaded once; tests must leave it as they found it.

    Composed here rather than with the function-scoped `compose` fixture so that one model serves
    the whole session; only the model node is resolved, which needs no Hydra runtime.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from medrl.models import FullFinetune, load_policy
    from medrl.utils.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=["model=tiny_qwen3"])
    GlobalHydra.instance().clear()
    spec = instantiate(cfg.model)
    spec.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
    return load_policy(spec, FullFinetune())


# --- a scripted OpenAI-protocol judge server (tests of judge rewards and judge metrics) ---------


class Scripted(BaseHTTPRequestHandler):
    """GET /v1/models lists one model; POST /v1/chat/completions answers as `script` says."""

    script: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._json(200, {"object": "list", "data": [{"id": "judge-model", "object": "model"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if self.script.get("sleep"):
            time.sleep(self.script["sleep"])
        if self.script.get("status", 200) != 200:
            return self._json(self.script["status"], {"error": {"message": "refused"}})
        reply = self.script.get("reply", "4")
        message = {"role": "assistant", "content": reply}
        self._json(
            200,
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            },
        )

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def scripted():
    """scripted(**script) -> JudgeSettings pointing at a server answering as scripted."""
    servers = []

    from medrl.rewards.judge import JudgeSettings

    def _start(**script) -> JudgeSettings:
        handler = type("Handler", (Scripted,), {"script": script})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.requests = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return JudgeSettings(
            base_url=f"http://127.0.0.1:{server.server_port}/v1", timeout_s=2, retries=0
        )

    yield _start
    for server in servers:
        server.shutdown()
        server.server_close()
