"""Tests for slotlab.metrics.segmentation: mBO and Hungarian mIoU.

Hand-made 4x4 label maps worked out by hand, plus brute force on random 6x6 cases.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from slotlab.metrics import (
    SegmentationMetric,
    best_overlap,
    binding_errors,
    iou_table,
    matched_iou,
    segmentation_metrics,
    summarise_binding,
)

TOL = 1e-12


def _t(*maps: list[list[int]]) -> torch.Tensor:
    """Stack hand-written label maps into an int64 batch ``[B, H, W]``."""
    return torch.tensor(maps, dtype=torch.int64)


def _close(a: torch.Tensor, b: list[float]) -> bool:
    return (
        a.dtype == torch.float64
        and a.shape == (len(b),)
        and torch.allclose(
            a, torch.tensor(b, dtype=torch.float64), atol=TOL, rtol=0, equal_nan=True
        )
    )


# Two objects; object 1 has 4 px, object 2 has 2 px.
TWO_OBJ = [
    [1, 1, 0, 0],
    [1, 1, 0, 0],
    [2, 2, 0, 0],
    [0, 0, 0, 0],
]
# Three objects of 4, 4 and 1 px.
THREE_OBJ = [
    [1, 1, 2, 2],
    [1, 1, 2, 2],
    [3, 0, 0, 0],
    [0, 0, 0, 0],
]


def test_perfect_segmentation_with_permuted_slots() -> None:
    true = _t(TWO_OBJ)
    pred = (true + 2) % 3  # bg -> slot 2, object 1 -> slot 0, object 2 -> slot 1
    for fn in (best_overlap, matched_iou):
        per_object, per_image = fn(true, pred)
        assert _close(per_object, [1.0, 1.0]) and _close(per_image, [1.0])
    m = segmentation_metrics(true, pred)
    assert m == {
        "mbo_objects": 1.0,
        "mbo_images": 1.0,
        "miou_objects": 1.0,
        "miou_images": 1.0,
        "num_objects": 2,
    }


def test_one_mask_covers_two_objects() -> None:
    true = _t(TWO_OBJ)
    pred = (
        true > 0
    ).long()  # slot 1 = objects 1 and 2 (6 px), slot 0 = background (10 px)
    # IoU(obj1, slot1) = 4/6, IoU(obj2, slot1) = 2/6, both 0 with slot 0.
    per_object, per_image = best_overlap(true, pred)
    assert _close(per_object, [2 / 3, 1 / 3]) and _close(per_image, [0.5])
    # Matching: obj1 -> slot1 (2/3) beats obj2 -> slot1 (1/3); obj2 gets slot 0, IoU 0.
    per_object, per_image = matched_iou(true, pred)
    assert _close(per_object, [2 / 3, 0.0]) and _close(per_image, [1 / 3])


def test_more_objects_than_slots() -> None:
    true = _t(THREE_OBJ)
    pred = (
        true == 1
    ).long()  # 2 slots: slot 1 = object 1 exactly, slot 0 = everything else (12 px)
    # mBO: obj1 1.0; obj2 4/12 with slot 0; obj3 1/12 with slot 0.
    per_object, per_image = best_overlap(true, pred)
    assert _close(per_object, [1.0, 1 / 3, 1 / 12]) and _close(per_image, [17 / 36])
    # mIoU: obj1 -> slot 1, obj2 -> slot 0, obj3 unmatched -> 0.
    per_object, per_image = matched_iou(true, pred)
    assert _close(per_object, [1.0, 1 / 3, 0.0]) and _close(per_image, [4 / 9])


def test_background_not_scored_but_background_slot_counts() -> None:
    true = _t(TWO_OBJ)
    # Slot 0 = object 1 plus all background (14 px), slot 1 = object 2 exactly.
    # Background gets no score; object 1's IoU is penalised by the bg pixels of slot 0.
    pred = (true == 2).long()
    per_object, _ = best_overlap(true, pred)
    assert _close(per_object, [4 / 14, 1.0])
    per_object, _ = matched_iou(true, pred)
    assert _close(per_object, [4 / 14, 1.0])
    # A slot that covers the background exactly does not add a score of 1.
    pred = true.clone()
    pred[true == 2] = 1  # slot 0 = bg exactly, slot 1 = objects 1 and 2
    per_object, _ = best_overlap(true, pred)
    assert _close(per_object, [2 / 3, 1 / 3])


def test_non_contiguous_label_ids() -> None:
    base = _t(TWO_OBJ)
    true = torch.where(base == 1, 23, torch.where(base == 2, 5, 0))  # 23: 4 px, 5: 2 px
    pred = torch.where(true == 23, 7, 0)  # slot 7 = object 23, slot 0 = object 5 + bg
    # Objects in label order: 5 (IoU 2/12 with slot 0), 23 (IoU 1 with slot 7).
    per_object, per_image = best_overlap(true, pred)
    assert _close(per_object, [2 / 12, 1.0]) and _close(per_image, [7 / 12])
    per_object, _ = matched_iou(true, pred)
    assert _close(per_object, [2 / 12, 1.0])
    iou, objects = iou_table(true, pred)
    assert iou.shape == (1, 24, 8) and objects.nonzero()[:, 1].tolist() == [5, 23]


def test_image_without_objects_is_skipped() -> None:
    true = _t(TWO_OBJ, [[0] * 4] * 4)
    pred = _t(TWO_OBJ, [[1, 2, 0, 0]] * 4)
    for fn in (best_overlap, matched_iou):
        per_object, per_image = fn(true, pred)
        assert _close(per_object, [1.0, 1.0]) and _close(per_image, [1.0, math.nan])
    m = segmentation_metrics(true, pred)
    assert m["mbo_images"] == 1.0 and m["miou_objects"] == 1.0 and m["num_objects"] == 2
    m = segmentation_metrics(true[1:], pred[1:])
    assert m["num_objects"] == 0 and all(
        math.isnan(m[k]) for k in m if k != "num_objects"
    )


def test_objects_vs_images_averaging() -> None:
    # Image 0: one object segmented perfectly. Image 1: THREE_OBJ case above.
    one = [[1, 0, 0, 0]] + [[0] * 4] * 3
    true = _t(one, THREE_OBJ)
    pred = torch.stack([true[0], (true[1] == 1).long()])
    m = segmentation_metrics(true, pred)
    assert m["num_objects"] == 4
    assert m["mbo_objects"] == pytest.approx(
        (1 + 1 + 1 / 3 + 1 / 12) / 4, abs=TOL
    )  # 29/48
    assert m["mbo_images"] == pytest.approx((1 + 17 / 36) / 2, abs=TOL)  # 53/72
    assert m["miou_objects"] == pytest.approx((1 + 1 + 1 / 3) / 4, abs=TOL)
    assert m["miou_images"] == pytest.approx((1 + 4 / 9) / 2, abs=TOL)
    assert abs(m["mbo_objects"] - m["mbo_images"]) > 0.1


def test_masks_input_equals_labels() -> None:
    gen = torch.Generator().manual_seed(1)
    true = torch.randint(0, 4, (3, 6, 6), generator=gen)
    logits = torch.randn(3, 5, 6, 6, generator=gen)
    a, b = (
        segmentation_metrics(true, logits.argmax(1)),
        segmentation_metrics(true, logits),
    )
    assert a == b


def _random_case(
    gen: torch.Generator, batch: int, max_obj: int, slots: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky random label maps (2x2 blocks on 6x6), some pixel noise in ``pred``."""
    true = (
        torch.randint(0, max_obj + 1, (batch, 3, 3), generator=gen)
        .repeat_interleave(2, 1)
        .repeat_interleave(2, 2)
    )
    pred = (
        torch.randint(0, slots, (batch, 3, 3), generator=gen)
        .repeat_interleave(2, 1)
        .repeat_interleave(2, 2)
    )
    noise = torch.rand(batch, 6, 6, generator=gen) < 0.2
    pred = torch.where(
        noise, torch.randint(0, slots, (batch, 6, 6), generator=gen), pred
    )
    return true, pred


def _brute_force(true: np.ndarray, pred: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-object best IoU, per-image total matched IoU; by masks and permutations."""
    best, totals = [], []
    for t, p in zip(true, pred):
        objs = [v for v in np.unique(t) if v != 0]
        slots = list(range(int(p.max()) + 1))
        iou = np.zeros((len(objs), len(slots)))
        for i, o in enumerate(objs):
            for j, s in enumerate(slots):
                a, b = t == o, p == s
                iou[i, j] = (a & b).sum() / (a | b).sum()
        best += [row.max() for row in iou]
        padded = np.concatenate(
            [iou, np.zeros((len(objs), len(objs)))], axis=1
        )  # dummy "unmatched" columns
        totals.append(
            max(
                sum(padded[i, c] for i, c in enumerate(perm))
                for perm in itertools.permutations(range(padded.shape[1]), len(objs))
            )
            if objs
            else math.nan
        )
    return best, totals


@pytest.mark.parametrize("max_obj,slots", [(3, 2), (4, 4), (3, 5)])
def test_against_brute_force(max_obj: int, slots: int) -> None:
    gen = torch.Generator().manual_seed(100 * max_obj + slots)
    true, pred = _random_case(gen, 12, max_obj, slots)
    best, totals = _brute_force(true.numpy(), pred.numpy())
    per_object, _ = best_overlap(true, pred)
    assert np.allclose(per_object.numpy(), best, atol=TOL)
    per_object, per_image = matched_iou(true, pred)
    counts = [len([v for v in np.unique(t) if v != 0]) for t in true.numpy()]
    assert np.allclose(
        per_image.numpy() * np.asarray(counts), totals, atol=1e-10, equal_nan=True
    )
    assert math.isclose(
        float(per_object.sum()), float(np.nansum(totals)), abs_tol=1e-10
    )
    assert (
        per_object <= best_overlap(true, pred)[0] + TOL
    ).all()  # matching never beats best overlap


def test_accumulation_equals_one_batch() -> None:
    gen = torch.Generator().manual_seed(7)
    t1, p1 = _random_case(gen, 5, 3, 4)
    t2, p2 = _random_case(gen, 7, 5, 3)
    t2[0] = 0  # an image without objects
    t2[1] = torch.where(t2[1] > 0, t2[1] + 18, 0)  # large ids, as in MOVi
    scores = SegmentationMetric(fg_ari=False, binding=False)  # mBO and mIoU only
    scores.update(t1, p1)
    scores.update(t2, p2)
    acc, whole = (
        scores.compute(),
        segmentation_metrics(torch.cat([t1, t2]), torch.cat([p1, p2])),
    )
    assert acc.keys() == whole.keys() and acc["num_objects"] == whole["num_objects"]
    for k in acc:
        assert acc[k] == pytest.approx(whole[k], abs=1e-12)
    # Not the mean of batch means.
    m1, m2 = segmentation_metrics(t1, p1), segmentation_metrics(t2, p2)
    assert not math.isclose(
        (m1["mbo_objects"] + m2["mbo_objects"]) / 2, acc["mbo_objects"], abs_tol=1e-9
    )
    scores.reset()
    assert scores.compute()["num_objects"] == 0


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        best_overlap(
            torch.zeros(1, 4, 4, dtype=torch.long),
            torch.zeros(1, 4, 5, dtype=torch.long),
        )
    with pytest.raises(ValueError):
        matched_iou(
            -torch.ones(1, 4, 4, dtype=torch.long),
            torch.zeros(1, 4, 4, dtype=torch.long),
        )
    per_object, per_image = best_overlap(
        torch.zeros(0, 4, 4, dtype=torch.long), torch.zeros(0, 4, 4, dtype=torch.long)
    )
    assert per_object.numel() == 0 and per_image.shape == (0,)


def test_binding_errors_by_hand() -> None:
    # one image, 2 x 6 pixels; 0 = background. Object 1 (4 px): 3 px in slot 0, 1 px in slot 2, which owns no
    # object (a spare slot). Object 2 (2 px): all in slot 1. Object 3 (2 px): both in slot 1 -> merged with 2.
    true = torch.tensor([[[1, 1, 1, 1, 2, 2],
                          [0, 0, 0, 0, 3, 3]]])
    pred = torch.tensor([[[0, 0, 0, 2, 1, 1],
                          [2, 2, 0, 0, 1, 1]]])
    b = binding_errors(true, pred)
    torch.testing.assert_close(b["purity"], torch.tensor([0.75, 1.0, 1.0], dtype=torch.float64))
    assert b["split"].tolist() == [True, False, False]
    assert b["merged"].tolist() == [False, True, True]
    assert b["stray"].tolist() == [1, 0, 0]
    assert b["stray_to_spare"].tolist() == [1, 0, 0]
    # slot 0 owns object 1 and also holds 2 background pixels of its 5; slot 1 holds no background
    torch.testing.assert_close(b["owner_ground"], torch.tensor([0.4, 0.0, 0.0], dtype=torch.float64))
    # over batches: means over all objects, stray_to_spare as a share of all stray pixels
    summary = summarise_binding([b, binding_errors(true, true)])
    assert summary["object_purity"] == pytest.approx((0.75 + 2 + 3) / 6)
    assert summary["split_objects"] == pytest.approx(1 / 6) and summary["merged_objects"] == pytest.approx(2 / 6)
    assert summary["owner_ground"] == pytest.approx(0.4 / 6) and summary["stray_to_spare"] == pytest.approx(1.0)
    assert summarise_binding([binding_errors(torch.zeros(1, 2, 2, dtype=torch.long), pred[:, :2, :2])]) == {}


def test_binding_errors_stray_to_a_neighbours_slot() -> None:
    true = torch.tensor([[[1, 1, 1, 2, 2, 0]]])
    pred = torch.tensor([[[0, 0, 1, 1, 1, 2]]])  # object 1 loses a pixel to object 2's slot; slot 2 is spare
    b = binding_errors(true, pred)
    assert b["stray"].tolist() == [1, 0]
    assert b["stray_to_spare"].tolist() == [0, 0]
    assert b["merged"].tolist() == [False, False]
    # batched: the same as image by image
    both = binding_errors(torch.cat([true, true.flip(-1)]), torch.cat([pred, pred.flip(-1)]))
    assert both["purity"].shape == (4,)
    torch.testing.assert_close(both["purity"][:2], b["purity"])


# ---------------------------------------------------------------------------- reference segmentations


def test_voronoi_gives_the_ground_to_the_nearest_object():
    from slotlab.metrics import fg_ari, voronoi_labels

    true = _t([[1, 0, 0, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 2]],
              [[0, 0, 0, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 0]])
    vor = voronoi_labels(true)
    # above the anti-diagonal is nearer object 1, below nearer 2; on it, ties go to either
    assert vor[0, 0, 1] == vor[0, 1, 0] == vor[0, 0, 2] == 1 and vor[0, 3, 2] == vor[0, 2, 3] == 2
    assert (vor[0][true[0] > 0] == true[0][true[0] > 0]).all()  # objects keep their own labels
    assert (vor[1] == 0).all()  # no objects: nothing to give the ground to
    # every object whole in its own segment: FG-ARI 1, but each object's IoU is its share of its cell
    assert fg_ari(true[:1], vor[:1]).item() == pytest.approx(1.0)
    mbo = segmentation_metrics(true[:1], vor[:1])["mbo_objects"]
    assert mbo == pytest.approx(0.5 * (1 / (vor[0] == 1).sum().item() + 1 / (vor[0] == 2).sum().item()))


def test_pooled_labels_keep_large_regions_and_lose_small_ones():
    from slotlab.metrics import pooled_labels

    true = torch.zeros(1, 16, 16, dtype=torch.int64)
    true[0, :, 8:] = 5  # right half: kept on a 4x4 grid
    true[0, 1, 1] = 3  # one pixel: a 4x4 grid cannot hold it
    pooled = pooled_labels(true, 4)
    assert pooled.shape == true.shape and pooled.dtype == true.dtype
    assert (pooled[0, :, 9:] == 5).all() and (pooled[0, :, :7] == 0).all()
    assert not (pooled == 3).any()
    assert torch.equal(pooled_labels(true, 16), true)  # at full resolution: the ground truth itself


def test_segmentation_report_is_the_sum_of_its_parts_over_batches():
    from slotlab.metrics import SegmentationMetric, fg_ari, mean_ignoring_nan

    g = torch.Generator().manual_seed(0)
    true, pred = torch.randint(0, 4, (6, 8, 8), generator=g), torch.randint(0, 5, (6, 8, 8), generator=g)
    report = SegmentationMetric()
    report.update(true[:4], pred[:4])
    report.update(true[4:], pred[4:])
    whole = segmentation_metrics(true, pred)
    out = report.compute()
    assert out["fg_ari"] == pytest.approx(mean_ignoring_nan(fg_ari(true, pred)), abs=1e-12)
    assert all(out[k] == pytest.approx(whole[k], abs=1e-12) for k in whole)
    assert out == {**out, **summarise_binding([binding_errors(true, pred)])}


def test_miou_lsd_matching_minimises_cosine_distance_and_drops_the_unmatched() -> None:
    # objects 1 (2 px) and 2 (6 px); slot 1 covers object 1 and 2 px of object 2, slot 2 the other 4 px of object 2
    true = torch.tensor([[[1, 1, 2, 2, 2, 2, 2, 2, 0, 0]]])
    pred = torch.tensor([[[1, 1, 1, 1, 2, 2, 2, 2, 0, 0]]])
    # IoU: obj1-slot1 2/4, obj2-slot1 2/8, obj2-slot2 4/6; cosine: obj1-slot1 2/sqrt(8), obj2-slot2 4/sqrt(24)
    for matching in ("oclf", "lsd"):
        per_object, _ = matched_iou(true, pred, matching)
        assert _close(per_object, [0.5, 4 / 6])  # both protocols agree here
    # three objects, two slots (one covers the objects, one the background): oclf matches two and scores the
    # left-over object 0; lsd matches two as well (by cosine) and drops the third
    true = torch.tensor([[[1, 1, 2, 2, 3, 3, 0, 0]]])
    pred = torch.tensor([[[1, 1, 1, 1, 1, 1, 0, 0]]])
    per_object, per_image = matched_iou(true, pred, "oclf", num_pred=2)
    assert sorted(per_object.tolist()) == pytest.approx([0.0, 0.0, 1 / 3]) and _close(per_image, [1 / 9])
    per_object, per_image = matched_iou(true, pred, "lsd", num_pred=2)
    assert sorted(per_object.tolist()) == pytest.approx([0.0, 1 / 3]) and _close(per_image, [1 / 6])
    with pytest.raises(ValueError, match="unknown mIoU matching"):
        matched_iou(true, pred, "best")


def test_miou_lsd_matching_equals_a_brute_force_minimum_of_cosine_distances() -> None:
    import itertools

    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        true = torch.randint(0, 4, (1, 6, 6), generator=gen)
        pred = torch.randint(0, 4, (1, 6, 6), generator=gen)
        t, p = true.flatten(), pred.flatten()
        objects = [o for o in range(1, 4) if (t == o).any()]
        slots = list(range(4))

        def cos(o, k):
            a, b = (t == o).double(), (p == k).double()
            return float((a * b).sum() / ((a.sum() * b.sum()).sqrt() + 1e-12))

        def iou(o, k):
            a, b = t == o, p == k
            return float((a & b).sum().double() / (a | b).sum().double())

        # the background (label 0) takes a slot too, at cost 10000, as in the official evaluation
        rows = [0, *objects]
        best, best_pairs = None, None
        for perm in itertools.permutations(slots, len(rows)):
            cost = sum(10000 if r == 0 else 1 - cos(r, k) for r, k in zip(rows, perm))
            if best is None or cost < best - 1e-12:
                best, best_pairs = cost, dict(zip(rows, perm))
        expected = [iou(o, best_pairs[o]) for o in objects]
        per_object, _ = matched_iou(true, pred, "lsd", num_pred=4)
        assert _close(per_object, expected), (per_object, expected)


def test_eval_says_which_miou_matching_it_used() -> None:
    from slotlab.evaluation import MATCHING_NOTES, LatentSlotDiffusionEvaluator, ObjectDiscoveryEvaluator

    assert LatentSlotDiffusionEvaluator.matching == "lsd" and ObjectDiscoveryEvaluator.matching == "oclf"
    assert set(MATCHING_NOTES) == {"oclf", "lsd"}


def test_a_metric_never_updated_is_left_out_not_nan() -> None:
    """LSD's diffusion loss needs latents, which `slotlab eval`'s batches do not carry: no "loss": NaN."""
    from slotlab.metrics import MeanMetric, MetricSet

    metrics = MetricSet({"loss": MeanMetric(), "psnr": MeanMetric()})
    metrics["psnr"].update(torch.tensor([20.0, 30.0]))
    assert metrics.compute() == {"psnr": 25.0}
    metrics["loss"].update(torch.tensor(0.5))
    assert metrics.compute() == {"loss": 0.5, "psnr": 25.0}


def test_slot_collapse_tells_uniform_attention_and_copied_slots_from_binding() -> None:
    from slotlab.metrics import slot_collapse

    b, n, k = 2, 6, 3
    uniform = torch.full((b, n, k), 1 / k)
    one_hot = torch.nn.functional.one_hot(torch.arange(n) % k, k).float().expand(b, n, k)
    copies = torch.randn(b, 1, 5).expand(b, k, 5)
    orthogonal = torch.eye(k)[None].expand(b, k, k) * 3.0
    out = slot_collapse(uniform, copies)
    assert torch.allclose(out["attention_peak"], torch.full((b,), 1 / k))
    assert torch.allclose(out["slot_similarity"], torch.ones(b), atol=1e-6)
    out = slot_collapse(one_hot, orthogonal)
    assert torch.allclose(out["attention_peak"], torch.ones(b))
    assert torch.allclose(out["slot_similarity"], torch.zeros(b), atol=1e-6)
    opposite = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])  # two slots pointing apart: similarity -1
    assert torch.allclose(slot_collapse(torch.full((1, 4, 2), 0.5), opposite)["slot_similarity"], torch.tensor([-1.0]))
