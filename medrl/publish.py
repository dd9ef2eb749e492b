"""Hydra entry point: `python -m medrl.publish <stage checkpoint> repo_id=<namespace/name>`
writes the checkpoint's model card (<checkpoint>/card/README.md: lineage with hashes, data,
output format and chat settings, GRPO conventions, validation curve and selection, the
evaluation with intervals and paired comparisons, intended use, a medical disclaimer) and
uploads the card, manifest.json and the merged or adapter form to the Hugging Face Hub.

`dry_run=true` writes the card and lists what would be uploaded, without network or token.
The positional folder is short for `checkpoint=<folder>` (conf/publish.yaml has every key).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from medrl.checkpoints import LineageError, Manifest, load_checkpoint
from medrl.publishing import card, upload
from medrl.publishing.settings import PublishSettings
from medrl.utils.config import CONFIG_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    """What a run did: the card folder, the files planned, and the commit URL (None in a dry
    run)."""

    card_dir: Path
    plan: list[upload.PlannedFile]
    commit_url: str | None = None


def run(cfg: DictConfig, api_factory=None) -> PublishResult:
    """Check everything that can fail (settings, checkpoint, form, token, hub, weights) before
    writing the card; then write it and upload, or list the upload in a dry run.
    `api_factory` replaces huggingface_hub.HfApi (tests)."""
    settings = PublishSettings.from_values(OmegaConf.to_container(cfg, resolve=True))
    folder = Path(settings.checkpoint)
    manifest, api = check_before_writing(settings, folder, api_factory)
    card_dir = write_card(settings, folder)
    plan = upload.upload_plan(folder, settings.form, card_dir)
    verb = "would upload" if settings.dry_run else "uploading"
    print(f"{verb} to {settings.repo_id or '<repo_id>'}:\n{upload.plan_table(plan)}")
    if settings.dry_run:
        return PublishResult(card_dir, plan)
    message = f"medrl {manifest.stage} ({settings.form}), weights {manifest.weights_hash[:12]}"
    url = upload.upload(api, plan, settings.repo_id, settings.private, message)
    log.info("uploaded: %s", url)
    return PublishResult(card_dir, plan, url)


def check_before_writing(settings: PublishSettings, folder: Path, api_factory=None):
    """(manifest, hub client or None in a dry run) once the checkpoint, its form, the token,
    the hub and (verify=true) the merged weights have passed; each failure names its key."""
    manifest = read_manifest(folder)
    upload.check_form(manifest, folder, settings.form)
    api = None
    if not settings.dry_run:
        api = upload.connect(upload.resolve_token(settings.token), api_factory)
    if settings.verify:
        verify_weights(folder)
    return manifest, api


def write_card(settings: PublishSettings, folder: Path) -> Path:
    """Gather what the card reports and write <checkpoint>/card/; returns that folder."""
    inputs = card.gather(
        folder,
        settings.form,
        settings.card,
        eval_dir=Path(settings.eval_dir) if settings.eval_dir else None,
        repo_id=settings.repo_id,
        verified=settings.verify,
    )
    card_dir = card.write_card(inputs)
    log.info("model card: %s", card_dir / card.CARD_FILE)
    return card_dir


def read_manifest(folder: Path) -> Manifest:
    """The checkpoint's manifest; an error naming checkpoint= when it is not a checkpoint."""
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint={folder}: no such folder")
    try:
        return Manifest.read(folder)
    except LineageError as error:
        raise LineageError(f"checkpoint={folder}: {error}") from error


def verify_weights(folder: Path) -> None:
    """Hash the merged weights against the manifest (load_checkpoint's check), so a card never
    vouches for weights that are not the ones it names; verify=false skips it."""
    load_checkpoint(folder, "merged")
    log.info("merged weights of %s match their manifest", folder)


def checkpoint_argument(argv: Sequence[str]) -> list[str]:
    """argv with a leading positional folder turned into the override `checkpoint=<folder>`
    (quoted, so any path survives Hydra's override grammar); other arguments unchanged."""
    args = list(argv)
    if args and "=" not in args[0] and not args[0].startswith("-"):
        # In a quoted Hydra value only backslashes before a quote (or the closing quote) are
        # escapes: double those runs and escape the quote; other backslashes stay as they are.
        quoted = re.sub(r"(\\*)('|$)", _escape_quote, args[0])
        args[0] = f"checkpoint='{quoted}'"
    return args


def _escape_quote(match: re.Match[str]) -> str:
    backslashes, quote = match.groups()
    return backslashes * 2 + ("\\'" if quote else "")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="publish")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """`python -m medrl.publish` and the medrl-publish script: the positional folder first
    becomes checkpoint=, then Hydra composes conf/publish.yaml with the overrides."""
    sys.argv[1:] = checkpoint_argument(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
