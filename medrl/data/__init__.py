"""The data layer: raw rows (local files or the Hub) -> QARecords -> disjoint, de-duplicated pools.

``DatasetSpec`` (built by Hydra from conf/dataset/<name>.yaml) says where the data is and how the
pools are cut; ``load_pools(spec)`` (or ``load_dataset``, which also takes a ``MixtureSpec`` of
several datasets) returns a ``DatasetPools`` mapping pool name -> records with a ``summary``.
``python -m medrl.data dataset=<name>`` prints that summary.
"""

from medrl.data.errors import DataError
from medrl.data.loader import load_pools
from medrl.data.mixture import MixtureSpec, load_dataset, load_mixture
from medrl.data.records import QARecord, normalize_question_text
from medrl.data.spec import DatasetSpec, HubSpec, LocalSpec, PoolSpec
from medrl.data.summary import DatasetPools, DataSummary, PoolSummary, SplitSummary

__all__ = [
    "DataError",
    "DataSummary",
    "DatasetPools",
    "DatasetSpec",
    "HubSpec",
    "MixtureSpec",
    "LocalSpec",
    "PoolSpec",
    "PoolSummary",
    "QARecord",
    "SplitSummary",
    "load_dataset",
    "load_mixture",
    "load_pools",
    "normalize_question_text",
]
