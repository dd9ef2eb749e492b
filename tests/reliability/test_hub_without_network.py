"""A Hugging Face Hub dataset without network access stops with a message saying how to use the
local files instead. The real ``datasets`` library runs here, in offline mode (set for the whole
suite by tests/conftest.py), on a dataset id that no cache can hold, so nothing is reached.

Tested elsewhere, not repeated here: the hub models of conf/model/ without network name
model.path=/that/folder (tests/models/test_loading.py); the dataset hub message with
``load_dataset`` replaced by a failing fake (tests/data/test_sources.py).
"""

from __future__ import annotations

import os

import pytest
from hydra.utils import instantiate

from medrl.data import DataError, load_pools

NEVER_CACHED = "medrl-tests/never-cached"


@pytest.fixture(autouse=True)
def offline() -> None:
    # A test that reaches the network is a bug; refuse to run rather than try.
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1", "tests must run with the hub offline"


def hub_error(compose, *overrides: str) -> str:
    cfg = compose("train", [f"dataset.hub.path={NEVER_CACHED}", *overrides])
    with pytest.raises(DataError) as caught:
        load_pools(instantiate(cfg.dataset))
    return str(caught.value)


def test_a_hub_dataset_without_network_says_how_to_use_the_local_files(compose):
    message = hub_error(compose, "dataset.source=hub")

    assert message.startswith(
        f"cannot load split 'validation' of {NEVER_CACHED} from the Hugging Face Hub "
        f"(ConnectionError: Couldn't reach '{NEVER_CACHED}' on the Hub"
    )
    assert (
        "Without network access, use the local files: dataset.source=local (or "
        "MEDRL_DATA_SOURCE=local) with MEDRL_DATA_DIR pointing at the folder that holds "
        "<dataset>/<split file>"
    ) in message


def test_auto_source_without_local_files_or_network_also_says_why_local_was_not_used(
    compose, tmp_path, monkeypatch
):
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv("MEDRL_DATA_DIR", str(nowhere))

    message = hub_error(compose, "dataset.source=auto")

    assert "Without network access, use the local files" in message
    assert message.endswith(
        f"Why not local: local files unavailable ({nowhere}/medmcqa/validation.jsonl.gz does "
        "not exist); reading the hub"
    )
