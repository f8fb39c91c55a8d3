"""Metrics, batched and vectorised in torch, and their accumulators (torchmetrics ``Metric``s)."""

from slotlab.metrics.ari import (
    adjusted_rand_index,
    ari,
    ari_score,
    fg_ari,
    mean_ignoring_nan,
    to_labels,
)
from slotlab.metrics.collapse import slot_collapse
from slotlab.metrics.image import image_mse, psnr
from slotlab.metrics.reference import pooled_labels, voronoi_labels
from slotlab.metrics.scores import AveragePrecisionMetric, MeanMetric, MetricSet
from slotlab.metrics.segmentation import (
    SegmentationMetric,
    best_overlap,
    binding_errors,
    iou_table,
    matched_iou,
    segmentation_metrics,
    summarise_binding,
)

__all__ = [
    "AveragePrecisionMetric",
    "MeanMetric",
    "MetricSet",
    "SegmentationMetric",
    "adjusted_rand_index",
    "ari",
    "ari_score",
    "best_overlap",
    "binding_errors",
    "fg_ari",
    "image_mse",
    "iou_table",
    "matched_iou",
    "mean_ignoring_nan",
    "pooled_labels",
    "psnr",
    "segmentation_metrics",
    "slot_collapse",
    "summarise_binding",
    "to_labels",
    "voronoi_labels",
]
