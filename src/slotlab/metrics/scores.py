"""Metric accumulators beside :class:`~slotlab.metrics.segmentation.SegmentationMetric`, all torchmetrics ``Metric``s
(update / compute / reset, reduced across DDP ranks), and :class:`MetricSet`, the named group a model kind is scored
with. The same objects serve validation during training and ``slotlab eval``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from slotlab.metrics.average_precision import AP_THRESHOLDS, average_precisions


class MeanMetric(Metric):
    """The mean of values added batch by batch (float64 sum and count; NaN values are skipped)."""

    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor, weight: float | Tensor = 1.0) -> None:
        """values: a tensor of any shape (each element counts ``weight`` times)."""
        v = values.detach().double().flatten()
        keep = ~torch.isnan(v)
        w = torch.as_tensor(weight, dtype=torch.float64, device=v.device).expand_as(v)
        self.total += (v[keep] * w[keep]).sum().to(self.total.device)
        self.count += w[keep].sum().to(self.count.device)

    def compute(self) -> Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class AveragePrecisionMetric(Metric):
    """AP at distance thresholds of set predictions (:func:`~slotlab.metrics.average_precision.average_precisions`),
    all predictions of every batch (and every DDP rank) ranked together."""

    full_state_update = False
    higher_is_better = True
    predictions: list[Tensor]
    targets: list[Tensor]
    confidence: list[Tensor]

    def __init__(self, thresholds: tuple[float, ...] = AP_THRESHOLDS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = thresholds
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")
        self.add_state("confidence", default=[], dist_reduce_fx="cat")

    def update(self, predictions: Tensor, targets: Tensor, confidence: Tensor | None = None) -> None:
        """predictions [B, K, 19], targets [B, M, 19] (zero rows: no object), confidence [B, K] (the real-object
        logits, which rank the predictions; default the real-object outputs)."""
        self.predictions.append(predictions.detach().float())
        self.targets.append(targets.detach().float())
        self.confidence.append((predictions[..., -1] if confidence is None else confidence).detach().double())

    def compute(self) -> dict[str, float]:
        if not len(self.predictions):
            return {}
        preds, targets = dim_zero_cat(self.predictions), dim_zero_cat(self.targets)
        confidence = dim_zero_cat(self.confidence)
        return average_precisions(preds.cpu(), targets.cpu(), self.thresholds, confidence.cpu())


class MetricSet(nn.ModuleDict):  # of Metric
    """Named metrics updated together. :meth:`compute` merges their results into one flat dict of numbers: a
    metric that returns a dict contributes its keys, any other its value under its own name; a metric never
    updated (e.g. LSD's diffusion loss when the batches carry no latents) is left out rather than reported as NaN."""

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, metric in self.items():
            if metric.update_count == 0:  # type: ignore[operator]  # the same on every rank: batches alike
                continue
            value = metric.compute()  # type: ignore[operator]
            if isinstance(value, dict):
                out.update(value)
            else:
                out[name] = float(value)
        return out

    def reset(self) -> None:
        for metric in self.values():
            metric.reset()  # type: ignore[operator]
