"""A local path that does not exist, or is not what its key needs, stops with a message naming
the config key and the path, never a hub error or a traceback from transformers.

Tested elsewhere, not repeated here: a missing local split file with a spec built in Python
(tests/data/test_sources.py), ``python -m medrl.data`` with no data (tests/data/test_cli.py), a
missing ids file (tests/data/test_sources.py), a missing GGUF package
(tests/models/test_loading.py), ``load_checkpoint`` of a folder without a manifest
(tests/checkpoints/test_stage_checkpoint.py).
"""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from medrl.checkpoints import LineageError
from medrl.data import DataError, load_pools
from medrl.models import FullFinetune, LoraAdapter, ModelLoadError, ModelSpec, load_policy
from medrl.stages.start import base_point


def data_error(spec) -> str:
    with pytest.raises(DataError) as caught:
        load_pools(spec)
    return str(caught.value)


def model_error(spec: ModelSpec) -> str:
    with pytest.raises(ModelLoadError) as caught:
        load_policy(spec, FullFinetune())
    return str(caught.value)


def missing_folder_message(key: str, path: str, tilde: str = "") -> str:
    return (
        f"{key}: the local folder {path!r} does not exist; point {key} at an existing folder "
        f"(a Hugging Face Hub id looks like namespace/name{tilde})"
    )


# ---------------------------------------------------------------------------------------------
# data


def test_a_data_dir_that_does_not_exist_names_the_file_and_the_keys_to_set(
    compose, tmp_path, monkeypatch
):
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv("MEDRL_DATA_DIR", str(nowhere))
    spec = instantiate(compose("train", ["dataset=medqa", "dataset.source=local"]).dataset)

    message = data_error(spec)

    assert message.startswith("MedQA: cannot read local files: ")
    assert f"{nowhere}/medqa/test.jsonl.gz does not exist" in message
    assert "Set MEDRL_DATA_DIR" in message and "set dataset.local.dir" in message


def test_a_dataset_local_dir_that_does_not_exist_is_named(compose, tmp_path):
    nowhere = tmp_path / "pubmedqa-copy"
    overrides = ["dataset=pubmedqa", "dataset.source=local", f"dataset.local.dir={nowhere}"]
    spec = instantiate(compose("train", overrides).dataset)

    message = data_error(spec)

    assert f"{nowhere}/pqa_labeled.jsonl.gz does not exist" in message
    assert "dataset.local.dir" in message


# ---------------------------------------------------------------------------------------------
# model weights and tokenizer


@pytest.mark.parametrize("where", ["absolute", "relative", "home"])
def test_a_model_path_that_does_not_exist_names_model_path_not_the_hub(compose, tmp_path, where):
    path = {
        "absolute": str(tmp_path / "Qwen3-0.6B"),
        "relative": "./models/no-such-model",
        "home": "~/no-such-medrl-model",
    }[where]
    spec = instantiate(compose("train", ["model=qwen3_0.6b", f"model.path='{path}'"]).model)

    with pytest.raises(ModelLoadError) as caught:
        load_policy(spec, LoraAdapter())

    tilde = "; ~ is not expanded, write the full path" if where == "home" else ""
    assert str(caught.value) == missing_folder_message("model.path", path, tilde)


def test_a_model_path_folder_without_a_model_names_model_path_and_the_folder(tmp_path):
    folder = tmp_path / "empty-model"
    folder.mkdir()

    message = model_error(ModelSpec(name="x", path=str(folder)))

    assert message.startswith(f"model.path: could not load the model folder {str(folder)!r}: ")


def test_a_tokenizer_path_that_does_not_exist_names_model_tokenizer_path(tmp_path):
    path = str(tmp_path / "tokenizer")
    spec = ModelSpec(name="x", path="Qwen/Qwen3-0.6B", tokenizer_path=path)

    assert model_error(spec) == missing_folder_message("model.tokenizer_path", path)


def test_a_shared_dir_without_the_qwen3_tokenizer_names_tokenizer_path_and_the_variable(
    compose, tmp_path, monkeypatch
):
    monkeypatch.setenv("MEDRL_SHARED_DIR", str(tmp_path / "shared"))
    spec = instantiate(compose("train", ["model=tiny_qwen3"]).model)

    message = model_error(spec)

    tokenizer = tmp_path / "shared" / "tokenizers" / "qwen3"
    assert message.startswith(f"model.tokenizer_path={str(tokenizer)!r} has no tokenizer.json")
    assert "MEDRL_SHARED_DIR" in message


def test_a_checkpoint_model_path_without_merged_weights_names_the_folder(tmp_path):
    folder = tmp_path / "checkpoints" / "sft"

    message = model_error(ModelSpec(name="x", source="checkpoint", path=str(folder)))

    assert message == missing_folder_message("model.path", str(folder / "merged"))


# ---------------------------------------------------------------------------------------------
# stage checkpoints


def test_init_from_a_folder_that_does_not_exist_names_init_from_and_the_folder(tmp_path):
    folder = tmp_path / "outputs" / "checkpoints" / "sft"
    model = ModelSpec(name="x", path="Qwen/Qwen3-0.6B")

    with pytest.raises(LineageError) as caught:
        base_point(model, str(folder))

    assert str(caught.value) == (
        f"init_from={folder}: no such folder; give a stage checkpoint folder, e.g. "
        "outputs/train/<run>/checkpoints/sft"
    )


def test_init_from_a_folder_that_is_not_a_stage_checkpoint_names_init_from_and_the_folder(
    tmp_path,
):
    folder = tmp_path / "outputs" / "checkpoints" / "sft"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    model = ModelSpec(name="x", path="Qwen/Qwen3-0.6B")

    with pytest.raises(LineageError) as caught:
        base_point(model, str(folder))

    assert str(caught.value) == (
        f"init_from={folder}: {folder} is not a medrl stage checkpoint: manifest.json is missing"
    )


def test_medrl_eval_with_a_missing_checkpoint_names_the_checkpoints_key(compose, tmp_path):
    from medrl.eval import run

    missing = tmp_path / "outputs" / "checkpoints" / "grpo"

    with pytest.raises(FileNotFoundError) as caught:
        run(compose("eval", [f"checkpoints=[{missing}]", "model=tiny_qwen3"]))

    assert str(caught.value) == (
        f"checkpoints: not medrl stage checkpoints (no manifest): ['{missing}']"
    )
