"""`python -m medrl.publish`: the model card of a real smoke checkpoint (SFT -> GRPO, evaluated)
and the list of files an upload sends.

The upload itself is NOT exercised here: the Hugging Face Hub cannot be reached from the test
machines (and tests never touch the network). What is tested instead: the card, the dry-run
file list, the errors raised before any upload (token, form, an unreachable hub, with
huggingface_hub's offline mode guaranteeing no request leaves), and that the HfApi calls an
upload makes carry the right arguments, with a fake HfApi standing in for the hub.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from medrl.checkpoints import LineageError, Manifest
from medrl.publish import checkpoint_argument, run
from medrl.publishing import DISCLAIMER, CardSettings, PublishError, gather, write_card
from medrl.publishing import upload as upload_module
from medrl.publishing.curve import followed_metric, val_curve_png, validation_table
from medrl.publishing.lineage import lineage_chain
from medrl.utils.config import PROJECT_ROOT
from medrl.utils.settings import SettingsError

SMOKE = [
    "debug=smoke",
    "algorithm=sft_grpo",
    "sft.max_steps=1",
    "grpo.max_steps=1",
    "evaluation.limit=4",
]


@pytest.fixture(scope="module")
def smoke_run(shared_dir, tmp_path_factory):
    """One smoke run, SFT then GRPO from the SFT checkpoint then evaluation; its folder."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from medrl.train import run as train
    from medrl.utils.config import CONFIG_DIR

    out = tmp_path_factory.mktemp("publish") / "run"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=SMOKE, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.model.cache_dir = str(tmp_path_factory.getbasetemp() / "model-cache")
        del cfg["hydra"]
    train(cfg)
    GlobalHydra.instance().clear()
    return out


def publish_cfg(compose, checkpoint: Path, *overrides: str):
    return compose("publish", [f"checkpoint={checkpoint}", *overrides])


def card_text(result) -> str:
    return (result.card_dir / "README.md").read_text()


def files_outside_card(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] != "card"
    }


def light_copy(checkpoint: Path, target: Path, **manifest_changes) -> Path:
    """A copy of a checkpoint's manifest and config, with empty form folders (no weights):
    enough for everything publishing checks before it reads weights."""
    target.mkdir(parents=True)
    payload = json.loads((checkpoint / "manifest.json").read_text()) | manifest_changes
    (target / "manifest.json").write_text(json.dumps(payload))
    shutil.copyfile(checkpoint / "config.yaml", target / "config.yaml")
    for form in payload["forms"]:
        (target / form).mkdir()
    return target


# --- the card ----------------------------------------------------------------------------------


def test_the_card_of_a_smoke_checkpoint_has_the_lineage_chain_and_the_eval_table(
    smoke_run, compose, capsys
):
    grpo, sft = smoke_run / "checkpoints" / "grpo", smoke_run / "checkpoints" / "sft"
    before = files_outside_card(grpo)

    result = run(publish_cfg(compose, grpo, "dry_run=true", "repo_id=me/medrl-grpo"))

    card = card_text(result)
    grpo_manifest, sft_manifest = Manifest.read(grpo), Manifest.read(sft)
    # The whole chain, every hash: grpo -> sft -> the tiny base model.
    for digest in (
        grpo_manifest.weights_hash,
        grpo_manifest.parent.weights_hash,
        sft_manifest.weights_hash,
        sft_manifest.parent.weights_hash,
    ):
        assert f"`{digest}`" in card
    assert "| 0 | grpo | checkpoint |" in card and "| 1 | sft | checkpoint |" in card
    assert "| 2 | tiny-qwen3 | model |" in card
    # The evaluation as the eval stage wrote it: every table row, intervals and paired tests.
    report = (smoke_run / "eval" / "report.md").read_text()
    table_rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert table_rows and all(line in card for line in table_rows)
    assert "### Paired comparisons" in card and "| sft -> grpo | 4 |" in card
    assert "This checkpoint is the `grpo` row." in card
    assert DISCLAIMER in card and "## Intended use" in card
    assert "loss_aggregation: seq_mean_token_mean" in card and "group_size: 2" in card
    assert "Chat template arguments" in card and '{"enable_thinking": false}' in card
    assert f"`{grpo_manifest.data_pools['grpo']['ids_hash']}`" in card
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "transformers" and meta["license"] == "other"
    assert meta["datasets"] == ["openlifescienceai/medmcqa"]
    assert {"medical", "sft", "grpo"} <= set(meta["tags"])
    assert "base_model" not in meta, "a tiny random model has no hub id"
    assert files_outside_card(grpo) == before, "the checkpoint's own files are untouched"

    # The dry run's file list: the merged form at the root, the card, the manifest.
    merged = sorted(p.name for p in (grpo / "merged").iterdir())
    expected = set(merged) | {"README.md", "eval_comparison.png", "manifest.json"}
    assert {f.path_in_repo for f in result.plan} == expected | {"val_curve.png"}
    # The smoke GRPO stage (max_steps=1) validates at steps 0 and 1 and keeps the last step.
    assert "- select: `last`" in card and "- metric: `val/accuracy`" in card
    assert "| step | n | accuracy [95% CI] |" in card
    assert "| 0 | 4 |" in card and "| 1 (selected) | 4 |" in card, "the kept step is marked"
    assert all(f.size == f.local_path.stat().st_size for f in result.plan)
    assert result.commit_url is None
    printed = capsys.readouterr().out
    assert "would upload to me/medrl-grpo" in printed and "model.safetensors" in printed


def test_an_sft_card_has_a_two_point_chain_and_no_grpo_conventions(smoke_run, compose):
    sft = smoke_run / "checkpoints" / "sft"

    card = card_text(run(publish_cfg(compose, sft, "dry_run=true", "verify=false")))

    assert "| 0 | sft | checkpoint |" in card and "| 1 | tiny-qwen3 | model |" in card
    assert "| 2 | " not in card.split("## Lineage")[1].split("## Training data")[0]
    assert "None: the stage ran the sft runner, not GRPO." in card
    assert "This checkpoint is the `sft` row." in card


def test_the_val_curve_and_the_selection_are_shown_when_the_checkpoint_has_them(
    smoke_run, compose, tmp_path
):
    grpo = shutil.copytree(smoke_run / "checkpoints" / "grpo", tmp_path / "grpo")
    rows = [
        {"step": s, "n": 50, "accuracy": a, "accuracy_ci_low": a - 0.1, "accuracy_ci_high": a + 0.1,
         "format_rate": f, "format_rate_ci_low": f - 0.1, "format_rate_ci_high": f + 0.1,
         "mean_tokens": 40.0, "answer_histogram": {"A": 30, "none": 20}}
        for s, a, f in [(0, 0.30, 0.5), (12, 0.34, 0.9), (20, 0.32, 0.95)]
    ]  # fmt: skip
    (grpo / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    # Outside its run folder: the evaluation is named with eval_dir=.
    eval_dir = f"eval_dir={smoke_run / 'eval'}"
    result = run(publish_cfg(compose, grpo, "dry_run=true", "verify=false", eval_dir))

    card = card_text(result)
    assert "| 12 | 50 | 0.340 [0.240, 0.440] | 0.900 [0.800, 1.000] | 40.0 |" in card
    assert "![validation curve](val_curve.png)" in card
    assert (result.card_dir / "val_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "val_curve.png" in {f.path_in_repo for f in result.plan}
    assert "This checkpoint is the `grpo` row." in card
    manifest = json.loads((grpo / "manifest.json").read_text())
    manifest.pop("selection")  # as written by medrl before validation existed
    (grpo / "manifest.json").write_text(json.dumps(manifest))
    card = card_text(run(publish_cfg(compose, grpo, "dry_run=true", "verify=false", eval_dir)))
    assert "No selection record in manifest.json" in card

    # The selection record (manifest.json's `selection`, written by newer runs) marks its step.
    selection = {"select": "best", "metric": "val/accuracy", "mode": "max", "step": 12,
                 "value": 0.34, "last_step": 20, "reason": "highest val/accuracy of 3"}  # fmt: skip
    inputs = replace(gather(grpo, "merged", CardSettings()), selection=selection)
    card = (write_card(inputs) / "README.md").read_text()
    assert "| 12 (selected) | 50 | 0.340 [0.240, 0.440] |" in card
    assert "- metric: `val/accuracy`" in card and "- reason: `highest val/accuracy of 3`" in card


def test_an_evaluation_on_several_benchmarks_has_the_headline_benchmarks_rows(tmp_path):
    from medrl.publishing.evidence import read_evaluation

    summary = {"headline": "medqa", "benchmarks": {"medqa": {"base": {}, "sft": {}}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "report.md").write_text("## Benchmarks\n")
    assert read_evaluation(tmp_path).rows == ("base", "sft")
    (tmp_path / "summary.json").write_text(json.dumps({"base": {}, "grpo": {}}))
    assert read_evaluation(tmp_path).rows == ("base", "grpo"), "one dataset: as before"


def test_a_single_validation_gives_the_table_without_a_curve(smoke_run, tmp_path):
    sft = shutil.copytree(smoke_run / "checkpoints" / "sft", tmp_path / "sft")
    (sft / "validation.jsonl").write_text(json.dumps({"step": 0, "n": 2, "accuracy": 0.5}) + "\n")

    card_dir = write_card(gather(sft, "merged", CardSettings()))

    assert "| 0 | 2 | 0.500 | n/a | n/a |" in (card_dir / "README.md").read_text()
    assert not (card_dir / "val_curve.png").exists()


def test_an_open_ended_stage_shows_the_metric_it_followed():
    rows = [
        {"step": s, "n": 3, "token_f1": f, "token_f1_ci_low": f - 0.1, "token_f1_ci_high": f + 0.1,
         "rouge_l": f / 2, "format_rate": 1.0, "mean_tokens": 30.0}
        for s, f in [(0, 0.25), (5, 0.35)]
    ]  # fmt: skip
    assert followed_metric(rows, {}) == "token_f1", "no accuracy: the open-ended default"
    assert followed_metric(rows, {"metric": "val/rouge_l"}) == "rouge_l"

    table = validation_table(rows, 5, followed_metric(rows, {}))

    assert "| step | n | token_f1 [95% CI] | format rate [95% CI] | mean tokens |" in table
    assert "| 5 (selected) | 3 | 0.350 [0.250, 0.450] | 1.000 | 30.0 |" in table
    png = val_curve_png(rows, {"metric": "val/mean_tokens", "step": 5})  # not a rate: own scale
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_an_evaluation_the_card_says_where_it_looked(smoke_run, compose, tmp_path):
    sft = smoke_run / "checkpoints" / "sft"
    empty = tmp_path / "no-eval"
    empty.mkdir()

    card = card_text(
        run(publish_cfg(compose, sft, "dry_run=true", "verify=false", f"eval_dir={empty}"))
    )

    assert f"No evaluation was found at `{empty}`" in card
    assert "python -m medrl.eval checkpoints=[" in card


def test_a_missing_parent_ends_the_chain_and_one_found_beside_the_checkpoint_continues_it(
    smoke_run, tmp_path
):
    real = smoke_run / "checkpoints"
    grpo_manifest = json.loads((real / "grpo" / "manifest.json").read_text())
    moved_parent = grpo_manifest["parent"] | {"location": "/gone/run/checkpoints/sft"}
    grpo = light_copy(real / "grpo", tmp_path / "run" / "checkpoints" / "grpo", parent=moved_parent)

    links = lineage_chain(grpo)
    assert [link.kind for link in links] == ["checkpoint", "missing"]
    assert "parent folder missing: /gone/run/checkpoints/sft" in links[1].note
    assert links[1].weights_hash == grpo_manifest["parent"]["weights_hash"]

    light_copy(real / "sft", tmp_path / "run" / "checkpoints" / "sft")  # the run moved whole
    links = lineage_chain(grpo)
    assert [link.kind for link in links] == ["checkpoint", "checkpoint", "model"]
    assert links[1].note.startswith("found beside the checkpoint")


def test_a_parent_folder_now_holding_other_weights_is_not_taken_for_the_parent(smoke_run, tmp_path):
    real = smoke_run / "checkpoints"
    sft = light_copy(real / "sft", tmp_path / "checkpoints" / "sft", weights_hash="f" * 64)
    parent = json.loads((real / "grpo" / "manifest.json").read_text())["parent"]
    grpo = light_copy(
        real / "grpo", tmp_path / "checkpoints" / "grpo", parent=parent | {"location": str(sft)}
    )

    links = lineage_chain(grpo)

    assert [link.kind for link in links] == ["checkpoint", "missing"]
    assert "now holds other weights" in links[1].note


# --- errors before any upload ------------------------------------------------------------------


def test_an_upload_without_a_token_names_token_and_hf_token(
    smoke_run, compose, tmp_path, monkeypatch
):
    folder = light_copy(smoke_run / "checkpoints" / "grpo", tmp_path / "grpo")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(upload_module, "stored_token", lambda: None)

    with pytest.raises(PublishError, match=r"token=.*HF_TOKEN.*dry_run=true"):
        run(publish_cfg(compose, folder, "repo_id=me/medrl-grpo"))
    assert not (folder / "card").exists(), "nothing is written before the checks pass"


def test_a_form_the_checkpoint_lacks_names_form_and_the_forms_it_has(smoke_run, compose, tmp_path):
    full = light_copy(smoke_run / "checkpoints" / "sft", tmp_path / "sft", forms=["merged"])

    with pytest.raises(PublishError, match=r"form=adapter: .*forms available: \['merged'\]"):
        run(publish_cfg(compose, full, "form=adapter", "dry_run=true"))


def test_an_unreachable_hub_says_so_before_anything_is_written(
    smoke_run, compose, tmp_path, monkeypatch
):
    import huggingface_hub.constants

    # Offline mode makes huggingface_hub refuse before any request: no network is touched.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder = light_copy(smoke_run / "checkpoints" / "grpo", tmp_path / "grpo")

    with pytest.raises(PublishError, match="the Hugging Face Hub cannot be reached"):
        run(publish_cfg(compose, folder, "repo_id=me/medrl-grpo", "token=hf_test"))
    assert not (folder / "card").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["form=gguf"], r"form=gguf: must be one of \['merged', 'adapter'\]"),
        ([], r"repo_id=null: an upload needs repo_id=<namespace>/<name>"),
        (["repo_id=no-namespace"], r"repo_id=no-namespace: must be <namespace>/<name>"),
        (["dry_run=true", "card.base_model=./local"], r"card.base_model=./local"),
    ],
)
def test_bad_settings_name_their_key(compose, tmp_path, overrides, message):
    with pytest.raises(SettingsError, match=message):
        run(publish_cfg(compose, tmp_path, *overrides))


def test_a_folder_that_is_not_a_checkpoint_names_checkpoint(compose, tmp_path):
    with pytest.raises(LineageError, match=r"checkpoint=.*manifest.json is missing"):
        run(publish_cfg(compose, tmp_path, "dry_run=true"))


# --- the upload, against a fake hub --------------------------------------------------------------


class FakeHfApi:
    """Records what medrl asks of huggingface_hub.HfApi; answers like the hub would."""

    calls: list = []

    def __init__(self, token=None):
        self.endpoint = "https://hub.invalid"
        FakeHfApi.calls.append(("init", {"token": token}))

    def whoami(self):
        FakeHfApi.calls.append(("whoami", {}))
        return {"name": "me"}

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_commit(self, **kwargs):
        FakeHfApi.calls.append(("create_commit", kwargs))
        return type("CommitInfo", (), {"commit_url": "https://hub.invalid/me/medrl-grpo/commit/1"})


def test_an_upload_creates_the_repo_and_commits_the_planned_files(smoke_run, compose, monkeypatch):
    grpo = smoke_run / "checkpoints" / "grpo"
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    FakeHfApi.calls = []

    result = run(
        publish_cfg(compose, grpo, "repo_id=me/medrl-grpo", "form=adapter", "verify=false"),
        api_factory=FakeHfApi,
    )

    names = [name for name, _ in FakeHfApi.calls]
    assert names == ["init", "whoami", "create_repo", "create_commit"]
    assert FakeHfApi.calls[0][1] == {"token": "hf_from_env"}
    assert FakeHfApi.calls[2][1] == {
        "repo_id": "me/medrl-grpo",
        "private": True,
        "exist_ok": True,
        "repo_type": "model",
    }
    commit = FakeHfApi.calls[3][1]
    assert commit["repo_id"] == "me/medrl-grpo" and commit["repo_type"] == "model"
    assert Manifest.read(grpo).weights_hash[:12] in commit["commit_message"]
    sent = {op.path_in_repo: Path(op.path_or_fileobj) for op in commit["operations"]}
    assert sent == {f.path_in_repo: f.local_path for f in result.plan}
    adapter_files = {p.name for p in (grpo / "adapter").iterdir()} - {"README.md"}
    card_files = {"README.md", "eval_comparison.png", "manifest.json", "val_curve.png"}
    assert set(sent) == adapter_files | card_files
    assert sent["README.md"] == result.card_dir / "README.md", "the card, not peft's stub"
    assert sent["manifest.json"] == grpo / "manifest.json"
    assert result.commit_url == "https://hub.invalid/me/medrl-grpo/commit/1"
    meta = yaml.safe_load(card_text(result).split("---\n")[1])
    assert meta["library_name"] == "peft"


def test_a_hub_that_drops_the_connection_mid_upload_is_reported_as_unreachable(
    smoke_run, compose, monkeypatch
):
    import httpx2

    class Dropping(FakeHfApi):
        def create_commit(self, **kwargs):
            raise httpx2.ConnectError("connection reset")

    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    cfg = publish_cfg(compose, smoke_run / "checkpoints" / "sft", "repo_id=me/x", "verify=false")
    with pytest.raises(
        PublishError, match="cannot be reached at https://hub.invalid while uploading"
    ):
        run(cfg, api_factory=Dropping)


# --- the command line ----------------------------------------------------------------------------


def test_a_positional_folder_is_the_checkpoint_override():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert checkpoint_argument(["/runs/a/checkpoints/grpo", "dry_run=true"]) == [
        "checkpoint='/runs/a/checkpoints/grpo'",
        "dry_run=true",
    ]
    assert checkpoint_argument(["checkpoint=/x", "dry_run=true"]) == [
        "checkpoint=/x",
        "dry_run=true",
    ]
    assert checkpoint_argument(["--help"]) == ["--help"]
    parser = OverridesParser.create()
    for path in ["/a b/[c],d", "/it's", "C:\\x\\y", "ends\\", "a\\'b"]:
        override = parser.parse_override(checkpoint_argument([path])[0])
        assert (override.key_or_group, override.value()) == ("checkpoint", path)


def test_python_m_medrl_publish_dry_run_lists_the_upload(smoke_run, tmp_path):
    sft = smoke_run / "checkpoints" / "sft"
    command = [sys.executable, "-m", "medrl.publish", str(sft), "dry_run=true", "verify=false"]
    command.append(f"hydra.run.dir={tmp_path / 'hydra'}")

    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "would upload to <repo_id>:" in done.stdout and "README.md" in done.stdout
