"""Several benchmarks in one evaluation (evaluation.benchmarks), in the eval stage of a run and in
`python -m medrl.eval`, generated and forced-choice: every point on every benchmark's eval
pool, one report section per benchmark with its own majority baseline and paired tests, a
side-by-side table, per-benchmark predictions and summary; benchmarks=null writes what it always
wrote; a bad name, an unsuitable format or a contaminated benchmark is refused before weights
load, naming the key."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from medrl.eval import run as run_eval_entry
from medrl.evaluation import read_predictions
from medrl.preflight import PreflightError
from medrl.train import run as run_train
from medrl.utils.config import CONFIG_DIR

THREE = ["medmcqa", "medqa", "pubmedqa"]
TITLES = {"medmcqa": "MedMCQA", "medqa": "MedQA", "pubmedqa": "PubMedQA"}
CHOICE = "evaluation.mode=choice_logprob"


def compose_at(config_name: str, overrides: list[str], output_dir: Path, cache: Path):
    """A config as `python -m medrl.<config_name>` composes it, writing into output_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.model.cache_dir = str(cache)
        del cfg["hydra"]
    return cfg


@pytest.fixture(scope="module")
def trained(shared_dir, tmp_path_factory) -> Path:
    """debug=smoke SFT, then its eval stage on the three benchmarks (generated, 4 items each):
    the run folder."""
    out = tmp_path_factory.mktemp("three-benchmarks") / "run"
    overrides = ["debug=smoke", "algorithm=sft", f"evaluation.benchmarks=[{','.join(THREE)}]"]
    cache = tmp_path_factory.getbasetemp() / "model-cache"
    cfg = compose_at("train", [*overrides, "evaluation.limit=4"], out, cache)
    run_train(cfg)
    GlobalHydra.instance().clear()
    return out


@pytest.fixture
def eval_config(shared_dir, tmp_path_factory, tmp_path):
    """eval_config(overrides, cache=None) -> a medrl.eval config on tiny_qwen3 writing into
    tmp_path/<n>; `cache` (default: the session's model cache) is where models are built."""
    made = []

    def make(overrides, cache=None):
        made.append(1)
        cache = cache or tmp_path_factory.getbasetemp() / "model-cache"
        out = tmp_path / f"eval{len(made)}"
        return compose_at("eval", ["model=tiny_qwen3", *overrides], out, cache)

    yield make
    GlobalHydra.instance().clear()


def section(report: str, benchmark: str) -> str:
    """The report's section of one benchmark (to the next top-level section)."""
    start = report.index(f"## {TITLES[benchmark]} (`{benchmark}`)")
    following = report.find("\n## ", start + 1)
    return report[start:] if following < 0 else report[start:following]


def majority(predictions) -> float:
    """Always answering the most frequent gold label: its accuracy."""
    return max(Counter(p.gold for p in predictions).values()) / len(predictions)


def test_a_run_scores_every_point_on_each_benchmark_with_its_own_baseline_and_tests(trained):
    out = trained
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["headline"] == "medmcqa" and list(summary["benchmarks"]) == THREE
    report = (out / "eval" / "report.md").read_text()
    baselines = {}
    for benchmark in THREE:
        folder = out / "eval" / benchmark
        predictions = {
            m: read_predictions(folder / m / "predictions.jsonl") for m in ("base", "sft")
        }
        golds = {p.gold for p in predictions["sft"]}
        assert golds <= ({"yes", "no", "maybe"} if benchmark == "pubmedqa" else set("ABCD"))
        assert [len(p) for p in predictions.values()] == [4, 4]
        assert [p.id for p in predictions["base"]] == [p.id for p in predictions["sft"]]
        accuracy = sum(p.correct for p in predictions["sft"]) / 4
        own = json.loads((folder / "summary.json").read_text())
        assert own == summary["benchmarks"][benchmark]
        assert own["sft"]["accuracy"] == accuracy
        baselines[benchmark] = majority(predictions["sft"])
        text = section(report, benchmark)
        assert "### Metrics" in text and "| sft | 4 |" in text
        assert f"Majority-class baseline: {baselines[benchmark]:.3f} (always" in text
        assert "### Paired comparisons" in text and "| base -> sft | 4 |" in text
        assert (folder / "report.md").read_text().startswith("## Metrics")
        assert (folder / "comparison.png").stat().st_size > 0
    header = "| model | " + " | ".join(f"{TITLES[b]} accuracy [95% CI]" for b in THREE) + " |"
    assert report.startswith(f"## Benchmarks\n\n{header}\n")
    (row,) = [line for line in report.splitlines() if line.startswith("| majority baseline |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    assert [float(cell.split()[0]) for cell in cells] == [round(baselines[b], 3) for b in THREE]
    assert (out / "eval" / "comparison.png").stat().st_size > 0


def test_the_first_benchmark_is_the_headline_of_results_json_and_sweeps(trained):
    results = json.loads((trained / "results.json").read_text())
    metrics = results["metrics"]
    assert metrics["eval/accuracy"] == metrics["eval/medmcqa/accuracy"]
    assert metrics["eval/medmcqa/accuracy"] == metrics["eval/medmcqa/sft/accuracy"]
    assert metrics["eval/base/accuracy"] == metrics["eval/medmcqa/base/accuracy"]
    assert "eval/pubmedqa/sft/macro_f1" in metrics and "eval/medqa/accuracy" in metrics
    assert results["optimized_metric"]["value"] == metrics["eval/medmcqa/sft/accuracy"]
    assert results["predictions"] == {
        "base": "eval/medmcqa/base/predictions.jsonl",
        "sft": "eval/medmcqa/sft/predictions.jsonl",
    }, "what a sweep's paired tests read: the headline's"
    assert results["benchmark_predictions"]["pubmedqa"]["sft"] == (
        "eval/pubmedqa/sft/predictions.jsonl"
    )
    logged = (trained / "csv" / "eval" / "metrics.csv").read_text().splitlines()[0]
    assert "eval/pubmedqa/accuracy" in logged.split(",")


def test_preflight_checked_each_benchmark_against_the_runs_training_pools(trained):
    checks = json.loads((trained / "preflight.json").read_text())
    checks = checks.get("results", checks.get("checks"))
    disjoint = [c for c in checks if c["key"] == "evaluation.benchmarks" and c["name"] == "pools"]
    assert [c["status"] for c in disjoint] == ["pass"] * 3
    assert "pubmedqa's 4 scored items share no question" in disjoint[2]["message"]
    assert "MedMCQA pool sft (stage sft)" in disjoint[2]["message"]


def test_medrl_eval_scores_a_checkpoint_on_two_benchmarks_by_forced_choice(trained, eval_config):
    checkpoint = trained / "checkpoints" / "sft"
    cfg = eval_config(
        [f"checkpoints=[{checkpoint}]", "evaluation.benchmarks=[pubmedqa,medqa]", CHOICE]
        + ["evaluation.limit=4"]
    )

    accuracy = run_eval_entry(cfg)

    out = Path(cfg.paths.output_dir)
    options = {"pubmedqa": ["yes", "no", "maybe"], "medqa": list("ABCD")}
    for benchmark, labels in options.items():
        for model in ("base", "sft"):
            predictions = read_predictions(out / "eval" / benchmark / model / "predictions.jsonl")
            assert len(predictions) == 4
            assert all(list(p.option_logprobs) == labels for p in predictions)
    report = (out / "eval" / "report.md").read_text()
    assert report.startswith(
        "## Benchmarks\n\n| model | PubMedQA accuracy [95% CI] | MedQA accuracy [95% CI] |"
    )
    for benchmark in options:
        text = section(report, benchmark)
        assert "| accuracy_norm [95% CI] |" in text and "| base -> sft | 4 |" in text
    assert "evaluation.choice.continuation=label" in report
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert accuracy == metrics["eval/pubmedqa/sft/accuracy"] == metrics["eval/accuracy"]
    assert metrics["eval/accuracy_norm"] == metrics["eval/pubmedqa/accuracy_norm"]
    checks = json.loads((out / "preflight.json").read_text())
    checks = checks.get("results", checks.get("checks"))
    lineage = [c for c in checks if c["key"] == "evaluation.benchmarks" and c["name"] == "pools"]
    assert [c["status"] for c in lineage] == ["pass", "pass"]
    assert f"sft ({checkpoint}) MedMCQA pool sft" in lineage[0]["message"]


def test_null_writes_what_it_always_wrote_and_the_runs_own_dataset_gives_the_same_files(
    eval_config,
):
    short = ["evaluation.limit=4", "evaluation.sampling.max_new_tokens=8"]
    single = eval_config(short)
    listed = eval_config([*short, "evaluation.benchmarks=[medmcqa,medqa]"])
    run_eval_entry(single)
    run_eval_entry(listed)

    one, several = Path(single.paths.output_dir) / "eval", Path(listed.paths.output_dir) / "eval"
    assert sorted(p.name for p in one.iterdir()) == [
        "base",
        "comparison.png",
        "report.md",
        "summary.json",
    ]
    assert set(json.loads((one / "summary.json").read_text())) == {"base"}
    results = json.loads((one.parent / "results.json").read_text())
    assert results["predictions"] == {"base": "eval/base/predictions.jsonl"}
    assert "benchmark_predictions" not in results
    for name in ("base/predictions.jsonl", "report.md", "summary.json"):
        assert (several / "medmcqa" / name).read_bytes() == (one / name).read_bytes(), name


def never_built(tmp_path: Path) -> Path:
    return tmp_path / "never-built"


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["evaluation.benchmarks=[medmcqa,usmle]"], ValueError, r"evaluation.benchmarks=.*usmle"),
        (
            ["evaluation.benchmarks=[medqa,bioasq]"],
            ValueError,
            r"evaluation.benchmarks lists \['bioasq'\], open-ended datasets without answer "
            r"labels, and format=xml answers with a label",
        ),
        (
            ["dataset=pubmedqa", "format=free_text", "reward=free_text"]
            + ["evaluation.benchmarks=[pubmedqa,medqa]"],
            ValueError,
            r"evaluation.benchmarks: format=free_text scores answers against a reference, and "
            r"medqa's eval pool lacks one",
        ),
        (
            ["evaluation.benchmarks=[medqa]", "+evaluation.benchmark_overrides.medqa.sourc=hub"],
            ValueError,
            r"evaluation.benchmark_overrides.medqa: .*sourc",
        ),
        (
            ["evaluation.benchmarks=[medmcqa]", "+evaluation.benchmark_overrides.medmcqa.seed=1"],
            ValueError,
            r"evaluation.benchmark_overrides.medmcqa: medmcqa is the run's own dataset",
        ),
    ],
    ids=["unknown-name", "closed-format-unlabelled", "free-text-no-reference", "bad-key", "own"],
)
def test_medrl_eval_refuses_before_any_model_is_built(
    eval_config, tmp_path, overrides, error, match
):
    cfg = eval_config(overrides, cache=never_built(tmp_path))
    with pytest.raises(error, match=match):
        run_eval_entry(cfg)
    assert not never_built(tmp_path).exists(), "no model was built or loaded"


def test_a_benchmark_holding_questions_a_checkpoint_trained_on_is_refused(
    trained, eval_config, tmp_path
):
    # The benchmark's scored items are MedMCQA's sft pool: the checkpoint trained on its head.
    cfg = eval_config(
        [f"checkpoints=[{trained / 'checkpoints' / 'sft'}]", "dataset=medqa"]
        + [
            "evaluation.benchmarks=[medmcqa]",
            "+evaluation.benchmark_overrides.medmcqa.eval_pool=sft",
        ]
        + ["evaluation.limit=4"]
    )
    with pytest.raises(PreflightError, match=r"medmcqa's scored items share questions") as caught:
        run_eval_entry(cfg)
    (failure,) = caught.value.failures
    assert failure.key == "evaluation.benchmarks" and "4 ids, 4 texts" in failure.message
    assert not (Path(cfg.paths.output_dir) / "eval").exists(), "nothing was evaluated"


def test_training_refuses_an_unknown_benchmark_before_any_stage(eval_config, tmp_path, shared_dir):
    cfg = compose_at(
        "train",
        ["debug=smoke", "algorithm=sft", "evaluation.benchmarks=[medqa,usmle]"],
        tmp_path / "run",
        never_built(tmp_path),
    )
    with pytest.raises(ValueError, match=r"evaluation.benchmarks=\['medqa', 'usmle'\]: names"):
        run_train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not never_built(tmp_path).exists()


def test_a_runs_training_pools_are_cleared_of_every_benchmarks_questions(tmp_path, shared_dir):
    from medrl.components import build_specs
    from medrl.data.pools import record_text
    from medrl.preflight.benchmarks import disjoint_checks
    from medrl.stages.plan import stage_plan
    from medrl.train import build_setups, eval_benchmarks, training_pools

    # MedQA drawn with another seed: its eval pool holds questions the mixture trains on.
    overrides = ["dataset=medmcqa_medqa", "algorithm=sft", "evaluation.benchmarks=[medqa]"]
    overrides += ["+evaluation.benchmark_overrides.medqa.seed=7"]
    cfg = compose_at("train", overrides, tmp_path / "run", never_built(tmp_path))
    plan = stage_plan(cfg)
    specs = [build_specs(stage.cfg) for stage in plan]
    chosen = [eval_benchmarks(stage, spec) for stage, spec in zip(plan, specs, strict=True)]

    alone = build_setups(plan, specs)
    sft, evaluation = build_setups(plan, specs, chosen)
    GlobalHydra.instance().clear()

    scored = evaluation.benchmarks["medqa"]["eval"]
    held = {record_text(record) for record in scored}
    assert held & {record_text(r) for r in alone[0].pools["sft"]}, "the test is meaningful"
    for pool in ("sft", "grpo", "val"):
        assert not held & {record_text(r) for r in sft.pools[pool]}, pool
    assert "held by another dataset's eval pool, dropped" in sft.pools.summary.notes[-1]
    checks = disjoint_checks({"medqa": scored}, training_pools([sft, evaluation]))
    assert [c.status for c in checks] == ["pass"]
