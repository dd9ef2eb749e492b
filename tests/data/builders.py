"""Builders for small datasets written to tmp_path in the layout of ../shared/data.

Rows follow the Hugging Face schemas (the local copies use the same field names), so every test
reads real files through the real readers; nothing here touches the network.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from medrl.data.records import QARecord
from medrl.data.sources import load_split, resolve_source
from medrl.data.spec import DatasetSpec

Row = dict[str, Any]

HUB = {
    "medmcqa": {"path": "openlifescienceai/medmcqa"},
    "medqa": {"path": "GBaker/MedQA-USMLE-4-options"},
    "pubmedqa": {"path": "qiaojin/PubMedQA", "name": "pqa_labeled"},
}


def write_rows(path: Path, rows: Iterable[Row | str]) -> Path:
    """Write ``rows`` as JSON Lines (gzip when the name ends in .gz); a str is written verbatim,
    which is how tests plant a malformed line."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_json(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def medmcqa_row(i: int, **fields: Any) -> Row:
    """A MedMCQA row as in the local copy (no id/exp/subject_name); ``fields`` override."""
    row: Row = {
        "question": f"Which nerve supplies muscle number {i}?",
        "opa": f"Nerve {i}a",
        "opb": f"Nerve {i}b",
        "opc": f"Nerve {i}c",
        "opd": f"Nerve {i}d",
        "cop": i % 4,
    }
    row.update(fields)
    return row


def medqa_row(i: int, **fields: Any) -> Row:
    """A MedQA 4-option row (GBaker schema); ``fields`` override."""
    options = {label: f"Drug {i}{label.lower()}" for label in "ABCD"}
    answer_idx = "ABCD"[i % 4]
    row: Row = {
        "question": f"A {20 + i}-year-old man presents with fever. What is the best treatment?",
        "answer": options[answer_idx],
        "options": options,
        "meta_info": "step1",
        "answer_idx": answer_idx,
        "metamap_phrases": ["fever"],
    }
    row.update(fields)
    return row


def pubmedqa_row(pubid: int, decision: str = "yes", **fields: Any) -> Row:
    """A PubMedQA PQA-L row (HF pqa_labeled schema plus ``year``); ``fields`` override."""
    row: Row = {
        "pubid": pubid,
        "question": f"Does treatment {pubid} reduce mortality?",
        "context": {
            "contexts": [f"Background of study {pubid}.", f"Methods of study {pubid}."],
            "labels": ["BACKGROUND", "METHODS"],
            "meshes": ["Humans"],
            "reasoning_required_pred": "yes",
            "reasoning_free_pred": "yes",
        },
        "long_answer": f"Treatment {pubid} helps.",
        "final_decision": decision,
        "year": "2001",
    }
    row.update(fields)
    return row


ROW_BUILDERS: dict[str, Callable[..., Row]] = {
    "medmcqa": medmcqa_row,
    "medqa": medqa_row,
    "pubmedqa": lambda i, **fields: pubmedqa_row(1000 + i, ("yes", "no", "maybe")[i % 3], **fields),
}


def make_spec(
    name: str,
    data_dir: Path,
    splits: Mapping[str, str],
    pools: Mapping[str, Mapping[str, Any]],
    **fields: Any,
) -> DatasetSpec:
    """A DatasetSpec reading ``data_dir/<split file>`` locally (hub set, never reached)."""
    local = {
        "dir": data_dir,
        "splits": dict(splits),
        "split_aliases": fields.pop("split_aliases", {}),
    }
    fields.setdefault("source", "local")
    fields.setdefault("eval_pool", "eval" if "eval" in pools else None)
    return DatasetSpec(name=name, pools=pools, hub=HUB[name], local=local, **fields)


def read_records(spec: DatasetSpec, split: str) -> list[QARecord]:
    """Every valid record of ``split`` in source order (no shuffle, no pools)."""
    plan = resolve_source(spec)
    return load_split(spec, plan, plan.splits[split]).valid


def bioasq_rows(n: int, start: int = 0) -> list[Row]:
    """`n` BioASQ rows in the Hub's question-answer-passages schema."""
    return [
        {
            "question": f"Which gene is mutated in disease {i}?",
            "answer": f"Gene G{i} is mutated in disease {i}.",
            "id": i,
            "relevant_passage_ids": [i, i + 1],
        }
        for i in range(start, start + n)
    ]


def write_bioasq(folder: Path, train: int = 12, test: int = 4) -> Path:
    """train.jsonl.gz and test.jsonl.gz of BioASQ rows (Hub schema) in `folder`."""
    write_rows(folder / "train.jsonl.gz", bioasq_rows(train))
    write_rows(folder / "test.jsonl.gz", bioasq_rows(test, start=1000))
    return folder
