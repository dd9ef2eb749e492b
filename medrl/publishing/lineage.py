"""A checkpoint's full lineage: its manifest's parent, that parent's parent, ... to the model.

The chain is read from the manifests as recorded (hashes are not recomputed: that would load
every ancestor's weights). A parent folder that is gone, or now holds other weights, ends the
chain with a link saying so, so a card never claims an ancestry it could not read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrl.checkpoints.manifest import MANIFEST_FILE, Manifest, ParentRef

MAX_DEPTH = 64  # a chain this long is a cycle of copied folders, not a curriculum


@dataclass(frozen=True)
class Link:
    """One point of a lineage, newest first.

    kind:        "checkpoint" (a stage checkpoint whose manifest was read), "model" (the
                 weights the first stage started from), or "missing" (a parent checkpoint
                 whose folder could not be read: the chain above it is unknown).
    parent_hash: the hash of the weights this point was trained from (None for the model and
                 for a missing checkpoint, whose manifest is unknown).
    note:        why a link is not plain (found beside the checkpoint, missing, other weights).
    model_spec:  for the model, the ModelSpec fields its manifest recorded (source, path, ...).
    """

    name: str
    kind: str
    location: str
    weights_hash: str
    parent_hash: str | None = None
    note: str = ""
    model_spec: dict[str, Any] = field(default_factory=dict)


def lineage_chain(folder: Path) -> list[Link]:
    """The chain from the checkpoint `folder` (first) back to the model it descends from."""
    manifest = Manifest.read(folder)
    links = [_checkpoint_link(manifest, folder, "")]
    seen = {folder.resolve()}
    while manifest.parent.kind == "checkpoint" and len(links) < MAX_DEPTH:
        parent = manifest.parent
        found, note = find_parent(parent, folder)
        if found is None or found.resolve() in seen:
            links.append(_missing_link(parent, note or "a cycle of checkpoint folders"))
            return links
        manifest, folder = Manifest.read(found), found
        if manifest.weights_hash != parent.weights_hash:
            why = f"{found} now holds other weights (hash {manifest.weights_hash})"
            links.append(_missing_link(parent, why))
            return links
        links.append(_checkpoint_link(manifest, found, note))
        seen.add(found.resolve())
    links.append(_model_link(manifest.parent))
    return links


def find_parent(parent: ParentRef, child: Path) -> tuple[Path | None, str]:
    """(the parent checkpoint's folder, a note): its recorded location, else a folder of the
    same name beside the child (a run's checkpoints/ moved or copied as a whole)."""
    recorded = Path(parent.location)
    if (recorded / MANIFEST_FILE).is_file():
        return recorded, ""
    beside = child.parent / recorded.name
    if (beside / MANIFEST_FILE).is_file():
        return beside, f"found beside the checkpoint (recorded at {parent.location})"
    return None, f"parent folder missing: {parent.location} (its own lineage is unknown)"


def lineage_table(links: list[Link]) -> str:
    """A markdown table of the chain, newest first, with full hashes."""
    lines = [
        "| # | point | kind | weights hash | trained from (parent hash) | location / note |",
        "| ---: | --- | --- | --- | --- | --- |",
    ]
    for index, link in enumerate(links):
        parent = f"`{link.parent_hash}`" if link.parent_hash else "-"
        where = f"`{link.location}`" + (f" ({link.note})" if link.note else "")
        cells = [str(index), link.name, link.kind, f"`{link.weights_hash}`", parent, where]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def unchanged_stages(links: list[Link]) -> list[str]:
    """Stages whose weights equal their parent's: they trained nothing (worth saying)."""
    return [
        link.name
        for link in links
        if link.kind == "checkpoint" and link.parent_hash == link.weights_hash
    ]


def root_model(links: list[Link]) -> Link | None:
    """The model the chain starts from, when the whole chain could be read."""
    last = links[-1]
    return last if last.kind == "model" else None


def _checkpoint_link(manifest: Manifest, folder: Path, note: str) -> Link:
    return Link(
        manifest.stage,
        "checkpoint",
        str(folder),
        manifest.weights_hash,
        manifest.parent.weights_hash,
        note,
    )


def _model_link(parent: ParentRef) -> Link:
    name = parent.model_spec.get("name") or parent.name
    return Link(name, "model", parent.location, parent.weights_hash, model_spec=parent.model_spec)


def _missing_link(parent: ParentRef, note: str) -> Link:
    return Link(parent.name, "missing", parent.location, parent.weights_hash, None, note)
