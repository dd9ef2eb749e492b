"""What a published checkpoint sends to the Hugging Face Hub, and sending it.

The repo gets the chosen form's files at its root (so `from_pretrained("<repo id>")` loads
them), the card (README.md and its images) and manifest.json. They go in one commit
(`HfApi.create_commit` with the planned files) rather than `upload_folder` of a staged copy:
the list a dry run prints is exactly what is sent, nothing is copied (the merged weights of a
4B model are 16 GB), and a failed upload leaves the repo as it was.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrl.checkpoints.manifest import MANIFEST_FILE, Manifest

TOKEN_ENV = "HF_TOKEN"
# peft writes a generated README.md into adapter/; the card replaces it at the repo root.
FORM_FILES_SKIPPED = ("README.md",)


class PublishError(RuntimeError):
    """Publishing cannot go on; the message names the key or the step to fix."""


@dataclass(frozen=True)
class PlannedFile:
    """One file of the upload: where it goes in the repo, where it is, its size in bytes."""

    path_in_repo: str
    local_path: Path
    size: int


def check_form(manifest: Manifest, folder: Path, form: str) -> Path:
    """The folder of `form` in the checkpoint; an error naming form= and the forms it has
    when it has no such form (adapter for a full fine-tune)."""
    available = [f for f in manifest.forms if (folder / f).is_dir()]
    if form not in available:
        raise PublishError(
            f"form={form}: checkpoint {folder} has no {form} form (its stage trained with "
            f"adapter {manifest.adapter.get('kind')!r}); forms available: {available}"
        )
    return folder / form


def upload_plan(folder: Path, form: str, card_dir: Path) -> list[PlannedFile]:
    """The files of the upload: the form's files, the card's files, manifest.json."""
    form_files = [
        p
        for p in sorted((folder / form).rglob("*"))
        if p.is_file() and p.relative_to(folder / form).as_posix() not in FORM_FILES_SKIPPED
    ]
    plan = [_planned(p, p.relative_to(folder / form).as_posix()) for p in form_files]
    plan += [_planned(p, p.name) for p in sorted(card_dir.iterdir()) if p.is_file()]
    plan.append(_planned(folder / MANIFEST_FILE, MANIFEST_FILE))
    counts = Counter(f.path_in_repo for f in plan)
    repeated = sorted(path for path, count in counts.items() if count > 1)
    if repeated:
        raise PublishError(f"{folder}/{form} holds files the card also writes: {repeated}")
    return plan


def plan_table(plan: list[PlannedFile]) -> str:
    """The plan as text: one line per file (size, path in the repo), then the total."""
    lines = [f"{_size(f.size):>10}  {f.path_in_repo}" for f in plan]
    total = sum(f.size for f in plan)
    lines.append(f"{_size(total):>10}  total, {len(plan)} files")
    return "\n".join(lines)


def resolve_token(token: str | None) -> str:
    """token=, else HF_TOKEN, else the token `hf auth login` stored; else an error saying how
    to give one (checked before any work)."""
    found = token or os.environ.get(TOKEN_ENV) or stored_token()
    if not found:
        raise PublishError(
            f"no Hugging Face token: set token=<a token with write access> or the {TOKEN_ENV} "
            "environment variable (or log in with `hf auth login`); dry_run=true writes the "
            "card and lists the files without one"
        )
    return found


def stored_token() -> str | None:
    """The token huggingface_hub finds on its own (a login's token file)."""
    from huggingface_hub import get_token

    return get_token()


def connect(token: str, api_factory: Any = None) -> Any:
    """An HfApi for `token`, after asking the hub who it belongs to: an unreachable hub or a
    refused token stops here, before the card is written or any weights are read."""
    if api_factory is None:
        from huggingface_hub import HfApi as api_factory
    api = api_factory(token=token)
    with hub_errors(api, "checking the token (whoami)"):
        api.whoami()
    return api


def upload(api: Any, plan: list[PlannedFile], repo_id: str, private: bool, message: str) -> str:
    """Create the repo if needed (an existing one keeps its visibility) and commit the plan's
    files in one commit; returns the commit's URL."""
    from huggingface_hub import CommitOperationAdd

    operations = [
        CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local_path))
        for f in plan
    ]
    with hub_errors(api, f"creating {repo_id}"):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with hub_errors(api, f"uploading to {repo_id}"):
        info = api.create_commit(
            repo_id=repo_id, operations=operations, commit_message=message, repo_type="model"
        )
    return str(getattr(info, "commit_url", info))


@contextlib.contextmanager
def hub_errors(api: Any, step: str) -> Iterator[None]:
    """Hub failures as PublishErrors that say what failed and what to change."""
    endpoint = getattr(api, "endpoint", None) or "the Hugging Face Hub"
    try:
        yield
    except _unreachable() as error:
        raise PublishError(
            f"the Hugging Face Hub cannot be reached at {endpoint} while {step} "
            f"({type(error).__name__}: {error}): check the network, HF_ENDPOINT and "
            "HF_HUB_OFFLINE, or run with dry_run=true to write the card and list the files"
        ) from error
    except _http_error() as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        fix = (
            f"set token= or {TOKEN_ENV} to a token with write access to that namespace"
            if status in (401, 403)
            else "see the hub's message"
        )
        raise PublishError(f"the hub refused {step} (HTTP {status}: {error}): {fix}") from error


def _unreachable() -> tuple[type[BaseException], ...]:
    """Errors meaning no answer came from the hub: no network, DNS, timeout, offline mode
    (huggingface_hub's OfflineModeIsEnabled is a ConnectionError), and the transport errors of
    its HTTP client (httpx; huggingface_hub 2 uses the httpx2 fork)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(importlib.import_module(name).TransportError)
    return tuple(errors)


def _http_error() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError,)


def _planned(path: Path, path_in_repo: str) -> PlannedFile:
    return PlannedFile(path_in_repo, path, path.stat().st_size)


def _size(size: int) -> str:
    """Bytes in B / KB / MB / GB (powers of 1024)."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
