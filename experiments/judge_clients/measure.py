"""Three ways to ask one judge the same questions: medrl's thin client, DeepEval, Evidently.

    python experiments/judge_clients/measure.py [--items 16] [--out FILE]

Needs `deepeval` and `evidently` (not medrl dependencies: install them in a separate
environment, e.g. `python -m venv --system-site-packages venv-judges; venv-judges/bin/pip
install deepeval==4.3.1 evidently==0.7.23 "pandas<3"`, and run this script with its python).

One local judge (`transformers serve` of the embedded SmolLM2-135M-Instruct on 127.0.0.1, the
`judge=local` server) grades, for the first `--items` PubMedQA eval records, the gold long
answer and a wrong one (the next record's long answer), under a medical-correctness criterion:

- medrl: `JudgeClient` with the shipped correctness rubric (one integer 1-5), all requests
  concurrent (judge.settings.concurrency = 8), no cache;
- DeepEval: `GEval` (the seed's medical-correctness metric: criteria, evaluation params input /
  actual output / expected output) on DeepEval's `LocalModel` pointed at the same server, every
  test case's `a_measure` gathered concurrently; its fixed evaluation steps are given, so no
  step-generation call is made (as medrl's rubric gives its steps);
- Evidently: `CorrectnessLLMEval` descriptors on a DataFrame (`Dataset.from_pandas`), provider
  openai with `api_url` at the same server.

For each: wall time, judgements that failed (an exception, or no score back), how many of them
were counted rather than raised, and how often the gold answer scored above the wrong one. The
judge is tiny: the scores test the plumbing, not the judge. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from medrl.data import load_pools
from medrl.data.records import QARecord
from medrl.rewards.judge import JudgeClient, JudgeRequest, JudgeSettings, load_rubric
from medrl.rewards.judge.server import JudgeServer, embedded_model_folder
from medrl.rewards.judge.setup import RUBRICS_DIR
from medrl.utils.config import CONFIG_DIR

CRITERIA = (
    "Determine whether the actual output is medically correct and agrees with the expected "
    "output (the reference answer) on the question asked."
)
STEPS = [
    "Read the question and the expected output: it is the correct answer.",
    "Check whether the actual output states the same conclusion as the expected output.",
    "Penalize claims that contradict the expected output or are medically wrong.",
]


@dataclass
class Outcome:
    """What one system returned: per item (gold score, wrong score), None where it failed."""

    system: str
    seconds: float
    gold: list[float | None]
    wrong: list[float | None]
    errors: list[str]  # exceptions that escaped per item (counted here, not by the library)

    def row(self) -> str:
        scores = self.gold + self.wrong
        failed = sum(s is None for s in scores)
        pairs = [(g, w) for g, w in zip(self.gold, self.wrong, strict=True) if None not in (g, w)]
        above = sum(g > w for g, w in pairs)
        good = [s for s in scores if s is not None]
        mean = f"{statistics.fmean(good):.2f}" if good else "n/a"
        return (
            f"| {self.system} | {len(scores)} | {self.seconds:.1f} | "
            f"{len(scores) / self.seconds:.2f} | {failed} | {len(self.errors)} | "
            f"{above} / {len(pairs)} | {mean} |"
        )


def records(n: int) -> list[QARecord]:
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", ["dataset=pubmedqa"])
    return list(load_pools(instantiate(cfg.dataset))["eval"])[: n + 1]


def cases(
    items: Sequence[QARecord],
) -> tuple[list[tuple[QARecord, str]], list[tuple[QARecord, str]]]:
    """(record, gold answer) and (record, the next record's answer) for each item."""
    gold = [(r, str(r.explanation)) for r in items[:-1]]
    wrong = [(r, str(items[i + 1].explanation)) for i, r in enumerate(items[:-1])]
    return gold, wrong


def timed(system: str, run: Callable[[list], tuple[list, list[str]]], gold, wrong) -> Outcome:
    start = time.perf_counter()
    scores, errors = run(gold + wrong)
    seconds = time.perf_counter() - start
    return Outcome(system, seconds, scores[: len(gold)], scores[len(gold) :], errors)


def medrl_system(base_url: str) -> Callable:
    def run(pairs):
        settings = JudgeSettings(base_url=base_url, concurrency=8, timeout_s=120, retries=0)
        client = JudgeClient(settings)
        rubric = load_rubric(RUBRICS_DIR / "correctness.yaml")
        verdicts = client.judge(rubric, [JudgeRequest(r, answer) for r, answer in pairs])
        return [v.score for v in verdicts], []  # failures come back as verdicts, never raised

    return run


def deepeval_system(base_url: str, model: str) -> Callable:
    from deepeval.metrics import GEval
    from deepeval.models import LocalModel
    from deepeval.test_case import LLMTestCase, LLMTestCaseParams

    judge = LocalModel(model=model, base_url=base_url, api_key="none", temperature=0.0)
    params = [
        LLMTestCaseParams.INPUT,
        LLMTestCaseParams.ACTUAL_OUTPUT,
        LLMTestCaseParams.EXPECTED_OUTPUT,
    ]

    async def one(record: QARecord, answer: str) -> tuple[float | None, str | None]:
        metric = GEval(
            name="Medical correctness",
            criteria=CRITERIA,
            evaluation_steps=STEPS,
            evaluation_params=params,
            model=judge,
            async_mode=True,
        )
        case = LLMTestCase(
            input=record.question, actual_output=answer, expected_output=record.explanation
        )
        try:
            return await metric.a_measure(case, _show_indicator=False), None
        except Exception as error:  # noqa: BLE001 (counted: that is the measurement)
            return None, f"{type(error).__name__}: {str(error)[:120]}"

    def run(pairs):
        async def gather():
            return await asyncio.gather(*(one(r, a) for r, a in pairs))

        results = asyncio.run(gather())
        return [s for s, _ in results], [e for _, e in results if e]

    return run


def evidently_system(base_url: str, model: str) -> Callable:
    import pandas as pd
    from evidently import DataDefinition, Dataset
    from evidently.descriptors import CorrectnessLLMEval
    from evidently.llm.utils.wrapper import OpenAIOptions

    def run(pairs):
        frame = pd.DataFrame(
            {
                "question": [r.question for r, _ in pairs],
                "answer": [a for _, a in pairs],
                "reference": [str(r.explanation) for r, _ in pairs],
            }
        )
        try:
            dataset = Dataset.from_pandas(
                frame,
                data_definition=DataDefinition(text_columns=["question", "answer", "reference"]),
                descriptors=[
                    CorrectnessLLMEval(
                        "answer",
                        target_output="reference",
                        provider="openai",
                        model=model,
                        include_score=True,
                        alias="correct",
                    )
                ],
                options=OpenAIOptions(api_key="none", api_url=base_url),
            )
        except Exception as error:  # noqa: BLE001 (one exception fails the whole batch)
            message = f"{type(error).__name__}: {str(error)[:160]}"
            return [None] * len(pairs), [message] * len(pairs)
        out = dataset.as_dataframe()
        score_columns = [c for c in out.columns if "score" in c.lower()]
        label_column = "correct"
        scores: list[float | None] = []
        for _, row in out.iterrows():
            if score_columns and pd.notna(row[score_columns[0]]):
                scores.append(float(row[score_columns[0]]))
            elif label_column in out.columns and isinstance(row[label_column], str):
                scores.append(1.0 if row[label_column].upper().startswith("CORRECT") else 0.0)
            else:
                scores.append(None)
        return scores, []

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    items = records(args.items)
    gold, wrong = cases(items)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcomes = []
    with JudgeServer(embedded_model_folder(), port=port, log_file="judge_server.log") as server:
        model = JudgeClient(JudgeSettings(base_url=server.base_url)).model
        systems = {
            "medrl (openai async client)": medrl_system(server.base_url),
            "DeepEval GEval (LocalModel)": deepeval_system(server.base_url, model),
            "Evidently CorrectnessLLMEval": evidently_system(server.base_url, model),
        }
        for name, run in systems.items():
            try:
                outcomes.append(timed(name, run, gold, wrong))
            except Exception:  # noqa: BLE001 (a system that cannot run at all is a result)
                print(f"{name} did not run:\n{traceback.format_exc()}")
    lines = [
        "| system | judgements | seconds | judgements/s | failed | raised | gold > wrong "
        "| mean score |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        *(outcome.row() for outcome in outcomes),
    ]
    for outcome in outcomes:
        for error in sorted(set(outcome.errors))[:3]:
            lines.append(f"\n{outcome.system}: {error}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
