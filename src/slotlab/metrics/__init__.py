"""Metrics, batched and vectorised in torch."""

from slotlab.metrics.ari import (
    adjusted_rand_index,
    ari,
    ari_score,
    fg_ari,
    mean_ignoring_nan,
    to_labels,
)
from slotlab.metrics.image import image_mse, psnr
from slotlab.metrics.reference import pooled_labels, voronoi_labels
from slotlab.metrics.segmentation import (
    SegmentationReport,
    SegmentationScores,
    best_overlap,
    binding_errors,
    iou_table,
    matched_iou,
    segmentation_metrics,
    summarise_binding,
)

__all__ = [
    "adjusted_rand_index",
    "ari",
    "ari_score",
    "fg_ari",
    "mean_ignoring_nan",
    "to_labels",
    "image_mse",
    "psnr",
    "pooled_labels",
    "voronoi_labels",
    "SegmentationReport",
    "SegmentationScores",
    "best_overlap",
    "binding_errors",
    "iou_table",
    "matched_iou",
    "segmentation_metrics",
    "summarise_binding",
]
