"""Metrics, batched and vectorised in torch."""

from slotlab.metrics.ari import (
    adjusted_rand_index,
    ari,
    ari_score,
    fg_ari,
    mean_ignoring_nan,
    to_labels,
)

__all__ = ["adjusted_rand_index", "ari", "ari_score", "fg_ari", "mean_ignoring_nan", "to_labels"]
