"""Evaluation: per-item predictions on an evaluation pool, JSONL files, metrics with CIs."""

from medrl.evaluation.predictions import (
    Z_95,
    Prediction,
    make_prediction,
    predict,
    read_predictions,
    summarize,
    wilson_interval,
    write_predictions,
)

__all__ = [
    "Z_95",
    "Prediction",
    "make_prediction",
    "predict",
    "read_predictions",
    "summarize",
    "wilson_interval",
    "write_predictions",
]
