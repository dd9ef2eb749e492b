"""Stage checkpoints with lineage manifests: save, load (merged or adapter form), verify."""

from medrl.checkpoints.hashing import ids_hash, weights_hash
from medrl.checkpoints.manifest import LineageError, Manifest, ParentRef
from medrl.checkpoints.stage import load_checkpoint, merged_model, save_stage_checkpoint

__all__ = [
    "LineageError",
    "Manifest",
    "ParentRef",
    "ids_hash",
    "load_checkpoint",
    "merged_model",
    "save_stage_checkpoint",
    "weights_hash",
]
