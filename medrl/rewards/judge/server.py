"""A local judge: `transformers serve` (OpenAI-compatible chat completions) on 127.0.0.1,
serving a local model folder, started and stopped by medrl.

    python -m medrl.rewards.judge.server                  # the embedded SmolLM2, port 8000
    python -m medrl.rewards.judge.server --model /path/to/folder --port 8001

`make judge-server` runs the first. Runs then use `judge=local` (same port). The test suite
starts one through `JudgeServer` and stops it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from medrl.utils.config import CONFIG_DIR, register_resolvers


def transformers_cli() -> str:
    """The `transformers` console script of this Python environment."""
    beside = Path(sys.executable).parent / "transformers"
    found = str(beside) if beside.is_file() else shutil.which("transformers")
    if found is None:
        raise FileNotFoundError(
            "the `transformers` command is missing: run `make install` (transformers[serving])"
        )
    return found


class JudgeServer:
    """`transformers serve <folder>` on host:port as a child process, up once /health answers.

    A context manager: the server is stopped (terminate, then kill after 10 s) on exit, and its
    output goes to `log_file` so a failed start can be read.
    """

    def __init__(
        self,
        folder: str,
        port: int = 8000,
        host: str = "127.0.0.1",
        device: str = "cpu",
        log_file: str | Path | None = None,
        start_timeout_s: float = 180.0,
    ) -> None:
        self.folder, self.port, self.host, self.device = folder, port, host, device
        self.log_file = Path(log_file) if log_file else None
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            transformers_cli(),
            "serve",
            self.folder,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--device",
            self.device,
            "--log-level",
            "warning",
        ]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def __enter__(self) -> JudgeServer:
        out = self.log_file.open("w") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                where = f"; its output: {self.log_file}" if self.log_file else ""
                raise RuntimeError(f"the judge server did not start on {self.base_url}{where}")
            time.sleep(0.5)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def embedded_model_folder(model: str = "smollm2_135m") -> str:
    """The local folder of a model config (conf/model/<model>.yaml), materialized if needed."""
    from medrl.models.materialize import materialize

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", [f"model={model}"])
    return materialize(instantiate(cfg.model))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a local model folder (default: the embedded SmolLM2)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    folder = args.model or embedded_model_folder()
    with JudgeServer(folder, port=args.port, device=args.device) as server:
        print(f"judge serving {folder} at {server.base_url} (judge=local); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()


if __name__ == "__main__":
    main()
