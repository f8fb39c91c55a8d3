"""Set prediction: the model, the Hungarian Huber loss and the AP metric (hand-worked cases and a reference)."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slotlab.losses import hungarian_huber_loss, pairwise_huber
from slotlab.metrics.average_precision import (
    AP_THRESHOLDS,
    average_precision,
    average_precisions,
    voc_average_precision,
)
from slotlab.models.set_prediction import SlotSetPredictor, SlotSetPredictorConfig


def obj(xyz, size=0, material=0, shape=0, colour=0, real=1.0):
    """One 19-dim vector: xyz already in [0, 1], attribute indices as one-hots."""
    v = np.zeros(19)
    v[:3] = xyz
    v[3 + size] = v[5 + material] = v[7 + shape] = v[10 + colour] = 1
    v[18] = real
    return v


def pred(xyz, conf, **attrs):
    v = obj(xyz, **attrs)
    v[18] = conf
    return v


# ---------------------------------------------------------------------------------------------- AP, by hand


def test_ap_hand_worked_claimed_and_threshold():
    targets = np.array([[obj([0.5, 0.5, 0.5]), obj([0.1, 0.1, 0.1], 1, 1, 1, 1), np.zeros(19)]])
    preds = np.array([[pred([0.5, 0.5, 0.5], 0.9),  # exact: TP
                       pred([0.55, 0.5, 0.5], 0.8),  # nearest is the claimed object: FP
                       pred([0.2, 0.1, 0.1], 0.7, size=1, material=1, shape=1, colour=1)]])  # distance 0.6
    # inf: TP FP TP -> precision 1, .5, 2/3; recall .5, .5, 1 -> AP = .5 * 1 + .5 * 2/3
    assert average_precision(preds, targets, math.inf) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(preds, targets, 1.0) == pytest.approx(0.5 + 1 / 3)
    # 0.5: the third is too far: TP FP FP -> AP = .5
    assert average_precision(preds, targets, 0.5) == pytest.approx(0.5)
    assert average_precision(preds, targets, 0.6) == pytest.approx(0.5)  # strictly below the threshold


def test_ap_no_fallback_to_second_nearest():
    targets = np.array([[obj([0.50, 0.5, 0.5]), obj([0.52, 0.5, 0.5])]])
    preds = np.array([[pred([0.52, 0.5, 0.5], 0.9), pred([0.53, 0.5, 0.5], 0.8)]])
    # the second prediction's nearest (0.52) is claimed; 0.50 is free but not considered
    assert average_precision(preds, targets) == pytest.approx(0.5)


def test_ap_ties_follow_the_official_order():
    # the official np.argsort(conf)[::-1]: on equal scores the later slot (and the later image) ranks first
    targets = np.array([[obj([0.5, 0.5, 0.5]), np.zeros(19)]])
    preds = np.array([[pred([0.65, 0.5, 0.5], 0.5),  # distance 0.9
                       pred([0.51, 0.5, 0.5], 0.5)]])  # distance 0.06, ranked first on the tie
    assert average_precision(preds, targets, math.inf) == pytest.approx(1.0)  # the second claims it
    # at 0.5 the second is a hit, then the first a miss: precision 1, .5; recall 1, 1
    assert average_precision(preds, targets, 0.5) == pytest.approx(1.0)
    # across images: image 1's slot ranks before image 0's on equal scores
    t2 = np.stack([targets[0], targets[0]])
    p2 = np.array([[pred([0.9, 0.5, 0.5], 0.5), np.zeros(19)], [pred([0.5, 0.5, 0.5], 0.5), np.zeros(19)]])
    # image 1's is a hit at 1.0, image 0's a miss (distance 2.4): TP then FP; recall over 2 objects
    assert average_precision(p2, t2, 1.0) == pytest.approx(0.5)


def test_ap_attribute_mismatch_and_degenerate():
    targets = np.array([[obj([0.5, 0.5, 0.5], colour=3)]])
    assert average_precision(np.array([[pred([0.5, 0.5, 0.5], 0.9, colour=4)]]), targets) == 0.0
    assert average_precision(np.array([[pred([0.5, 0.5, 0.5], 0.9, colour=3)]]), targets) == 1.0
    assert math.isnan(average_precision(np.zeros((1, 2, 19)), np.zeros((1, 2, 19))))
    assert set(average_precisions(np.zeros((1, 2, 19)), targets)) == {"ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125"}


def test_voc_interpolation():
    # precision 1, .5, 2/3 at recall .5, .5, 1 -> envelope 1 up to .5, 2/3 up to 1
    assert voc_average_precision(np.array([1, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(0.5 + 1 / 3)
    assert voc_average_precision(np.array([0.0, 0.5]), np.array([0.0, 1.0])) == pytest.approx(0.5)


def _reference_ap(preds, targets, threshold, conf=None):
    """The protocol written as a plain loop, straight from its description; ranked as the official code ranks,
    ``np.argsort(conf)[::-1]`` (ties included) over the image-major flattened slots, ``conf`` the real-object
    outputs unless given."""
    b, k, _ = preds.shape
    flat = preds.reshape(b * k, 19)
    conf = flat[:, 18] if conf is None else np.asarray(conf).reshape(-1)
    order = np.argsort(conf)[::-1]
    claimed, tp, fp = set(), [], []
    attrs = lambda v: [int(np.argmax(v[a:c])) for a, c in ((3, 5), (5, 7), (7, 10), (10, 18))]
    for i in order:
        img, best, best_d = i // k, None, 10_000.0
        for j, t in enumerate(targets[img]):
            if t[18] and attrs(t) == attrs(flat[i]):
                d = float(np.linalg.norm((t[:3] - flat[i, :3]) * 6))
                if d < best_d:
                    best, best_d = j, d
        ok = best is not None and (threshold == math.inf or best_d < threshold) and (img, best) not in claimed
        if ok:
            claimed.add((img, best))
        tp.append(ok)
        fp.append(not ok)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return voc_average_precision(tp / (tp + fp), tp / targets[..., 18].sum())


def test_ap_matches_a_reference_loop_on_random_sets():
    rng = np.random.default_rng(0)
    for trial in range(5):
        b, k = 6, 5
        targets = np.zeros((b, k, 19))
        preds = np.zeros((b, k, 19))
        for i in range(b):
            for j in range(rng.integers(1, k + 1)):
                targets[i, j] = obj(rng.random(3), *rng.integers(0, [2, 2, 3, 8]))
            for j in range(k):  # noisy copies of targets, some with wrong attributes
                src = targets[i, rng.integers(0, k)]
                v = src.copy()
                v[:3] += rng.normal(0, 0.05, 3)
                if rng.random() < 0.2:
                    v[10:18] = np.roll(v[10:18], 1)
                v[18] = round(rng.random(), 1)  # coarse scores: ties happen
                preds[i, j] = v
        for th in AP_THRESHOLDS:
            assert average_precision(preds, targets, th) == pytest.approx(_reference_ap(preds, targets, th)), (trial, th)


# ---------------------------------------------------------------------------------------------- loss


def _brute_force_loss(p, t):
    b, k, _ = p.shape
    cost = pairwise_huber(p, t)
    return torch.stack([min(cost[i, list(perm), range(k)].sum() for perm in itertools.permutations(range(k)))
                        for i in range(b)]).mean()


def test_hungarian_loss_is_the_best_assignment():
    torch.manual_seed(0)
    p, t = torch.rand(3, 4, 19), torch.rand(3, 4, 19)
    assert hungarian_huber_loss(p, t).loss.item() == pytest.approx(_brute_force_loss(p, t).item(), rel=1e-6)


def test_hungarian_loss_permutation_invariant_zero_at_solution_and_pads():
    torch.manual_seed(1)
    t = torch.rand(2, 5, 19)
    p = t[:, torch.randperm(5)]
    assert hungarian_huber_loss(p, t).loss.item() == pytest.approx(0.0, abs=1e-7)
    q = torch.rand(2, 5, 19)
    base = hungarian_huber_loss(q, t).loss
    assert hungarian_huber_loss(q[:, torch.randperm(5)], t).loss.item() == pytest.approx(base.item(), rel=1e-6)
    short = t[:, :3]
    padded = F.pad(short, (0, 0, 0, 2))
    assert hungarian_huber_loss(q, short).loss.item() == pytest.approx(hungarian_huber_loss(q, padded).loss.item())
    with pytest.raises(ValueError, match="targets must be"):
        hungarian_huber_loss(q, torch.rand(2, 6, 19))


def test_pairwise_huber_matches_the_definition():
    p, t = torch.tensor([[[0.0, 3.0]]]), torch.tensor([[[0.5, 0.0], [0.0, 0.0]]])
    # Huber(0.5) = 0.125, Huber(3) = 2.5 (delta 1): mean 1.3125; second target: (0 + 2.5) / 2
    np.testing.assert_allclose(pairwise_huber(p, t).numpy(), [[[1.3125, 1.25]]])


# ---------------------------------------------------------------------------------------------- model


def test_set_predictor_shapes_gradients_and_loss():
    cfg = SlotSetPredictorConfig(resolution=32, encoder_channels=[16, 16, 16, 16], num_slots=6, slot_dim=32,
                                 mlp_hidden=32, head_hidden=32)
    model = SlotSetPredictor(cfg)
    assert model.feature_size == 8  # strides 1, 2, 2, 1
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    targets = torch.rand(2, 4, 19)
    out = model(x, targets)
    assert out.predictions.shape == (2, 6, 19) and out.attn.shape == (2, 3, 64, 6)
    assert (out.predictions > 0).all() and (out.predictions < 1).all()
    out.loss.backward()
    assert model.slot_attention.mu.grad is not None and model.head[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expected images"):
        model(torch.rand(2, 3, 16, 16))


def test_set_predictor_paper_defaults_and_save_load(tmp_path):
    cfg = SlotSetPredictorConfig()
    assert (cfg.resolution, cfg.num_slots, cfg.encoder_strides, cfg.num_outputs) == (128, 10, [1, 2, 2, 1], 19)
    small = SlotSetPredictorConfig(resolution=16, encoder_channels=[8, 8, 8, 8], slot_dim=16, mlp_hidden=16,
                                   head_hidden=16)
    model = SlotSetPredictor(small)
    model.save_pretrained(tmp_path / "m")
    again = SlotSetPredictor.from_pretrained(tmp_path / "m")
    x = torch.rand(1, 3, 16, 16)
    g = lambda: torch.Generator().manual_seed(0)
    torch.testing.assert_close(model(x, generator=g()).predictions, again(x, generator=g()).predictions)


# ---------------------------------------------------------------------------------------------- CLI, end to end


def test_cli_train_eval_set_prediction_on_procedural_scenes(tmp_path, capsys):
    import json

    from slotlab.checkpoints import load_trained
    from slotlab.cli.main import main
    from slotlab.config import load_config

    cfg = load_config("clevr_set_prediction")
    assert (cfg.task, cfg.optim.batch_size, cfg.optim.max_steps, cfg.optim.warmup_steps, cfg.optim.decay_steps) == (
        "set_prediction", 512, 150_000, 1_000, 50_000)
    assert cfg.model.encoder_strides == [1, 2, 2, 1] and cfg.data.crop is None and cfg.data.dataset == "clevr"
    small = ["model.resolution=32", "model.encoder_channels=[8,8,8,8]", "model.slot_dim=16", "model.mlp_hidden=16",
             "model.head_hidden=16", "data.resolution=32", "data.train_size=48", "data.val_size=16",
             "optim.batch_size=8", "optim.max_steps=12", "trainer.val_every_n_steps=6", "trainer.max_time_minutes=null",
             "trainer.precision=32-true"]
    assert main(["train", "clevr_set_prediction_demo", "--out", str(tmp_path / "run"), "--no-progress", *small]) == 0
    curve = [json.loads(line) for line in (tmp_path / "run" / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [6, 12] and {"ap_inf", "ap_1", "ap_0.125", "loss"} <= set(curve[-1])
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    model, config = load_trained(tmp_path / "run")
    assert isinstance(model, SlotSetPredictor) and config.task == "set_prediction"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_images"] == 16 and set(metrics) >= {"ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125", "loss"}
    assert 0 <= metrics["ap_inf"] <= 1
    model2, _ = load_trained(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert isinstance(model2, SlotSetPredictor)
    # a dataset without targets cannot be scored
    assert main(["train", "clevr_set_prediction_demo", "--out", str(tmp_path / "bad"), "data.dataset=tetrominoes",
                 *small]) == 2
    assert "needs a dataset with targets" in capsys.readouterr().err


def test_weights_saved_with_the_old_encoder_keys_still_load(tmp_path):
    """Encoders stored their convs under ``cnn.`` before the backbone rename; such weights must load (strictly)."""
    from safetensors.torch import load_file, save_file

    from slotlab.checkpoints import load_trained

    small = SlotSetPredictorConfig(resolution=16, encoder_channels=[8, 8, 8, 8], slot_dim=16, mlp_hidden=16,
                                   head_hidden=16)
    model = SlotSetPredictor(small)
    model.save_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    old = {k.replace("encoder.backbone.", "encoder.cnn."): v for k, v in weights.items()}
    assert any(k.startswith("encoder.cnn.") for k in old)
    save_file(old, tmp_path / "m" / "model.safetensors")
    loaded, _ = load_trained(tmp_path / "m")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    save_file({k: v for k, v in weights.items() if not k.startswith("head.")}, tmp_path / "m" / "model.safetensors")
    with pytest.raises(Exception, match="head"):  # missing weights are an error, not silently random
        load_trained(tmp_path / "m")


def _batch_with_ties(seed: int):
    rng = np.random.default_rng(seed)
    targets = np.zeros((6, 10, 19))
    for b in range(6):
        for m in range(rng.integers(2, 7)):
            targets[b, m, :3] = rng.random(3)
            for a, e in ((3, 5), (5, 7), (7, 10), (10, 18)):
                targets[b, m, a + rng.integers(0, e - a)] = 1
            targets[b, m, 18] = 1
    preds = np.zeros((6, 10, 19))
    for b in range(6):
        for k in range(10):
            src = targets[b, rng.integers(0, 10)]
            preds[b, k, :18] = src[:18] if rng.random() < 0.7 else rng.random(18)
            preds[b, k, :3] += rng.normal(0, 0.04, 3)
            preds[b, k, 18] = rng.choice([0.25, 0.5, 1.0])  # three values: ties everywhere
    return preds, targets


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ap_ranks_ties_as_the_official_code(seed):
    preds, targets = _batch_with_ties(seed)
    for th in (math.inf, 1.0, 0.5, 0.25):
        ref = _reference_ap(preds, targets, th, preds[..., 18])
        assert average_precision(torch.tensor(preds), torch.tensor(targets), th) == pytest.approx(ref, abs=1e-12)
    # with ties, the order among them matters (so matching the official order is not a detail)
    stable = np.argsort(-preds[..., 18].reshape(-1), kind="stable")
    assert not np.array_equal(stable, np.argsort(preds[..., 18].reshape(-1))[::-1])


def test_ap_ranks_on_logits_where_the_sigmoid_saturates():
    preds, targets = _batch_with_ties(5)
    logits = np.random.default_rng(5).uniform(17, 30, preds.shape[:2])  # all sigmoid to exactly 1.0 in float32
    saturated = torch.sigmoid(torch.tensor(logits, dtype=torch.float32))
    assert (saturated == 1.0).all()
    preds[..., 18] = saturated.double().numpy()
    th = 0.5
    ranked = average_precision(torch.tensor(preds), torch.tensor(targets), th, confidence=torch.tensor(logits))
    assert ranked == pytest.approx(_reference_ap(preds, targets, th, logits), abs=1e-12)
    tied = average_precision(torch.tensor(preds), torch.tensor(targets), th)
    assert tied == pytest.approx(_reference_ap(preds, targets, th, preds[..., 18]), abs=1e-12)
    assert ranked != tied  # the logits' order is not the tie order


def test_the_set_predictor_gives_its_logits_for_ranking():
    model = SlotSetPredictor(SlotSetPredictorConfig(resolution=16, num_slots=3, slot_dim=8, mlp_hidden=8,
                                                    encoder_channels=[4], encoder_strides=[1], head_hidden=8))
    out = model(torch.rand(2, 3, 16, 16) * 2 - 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.sigmoid(out.logits), out.predictions)
