"""Latent Slot Diffusion: decoder with position embeddings, model, sampling, training module, CLI end to end."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from slotlab.config import load_config
from slotlab.models.image_autoencoder import ImageAutoencoder, ImageAutoencoderConfig
from slotlab.models.lsd import LatentSlotDiffusion, LatentSlotDiffusionConfig
from slotlab.modules import build_grid
from slotlab.modules.backbones import UNetBackbone
from slotlab.modules.slot_unet import CartesianEmbedding, PositionalAttnProcessor, SlotConditionedUNet

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**kw) -> LatentSlotDiffusionConfig:
    base = dict(resolution=16, latent_size=8, backbone="cnn", backbone_channels=[16, 16], backbone_strides=[1, 2],
                num_slots=3, slot_dim=16, mlp_hidden=32, decoder_channels=[16, 32], decoder_layers_per_block=1,
                decoder_attention_levels=1, decoder_heads=2, decoder_norm_groups=8, cross_attention_dim=16)
    return LatentSlotDiffusionConfig(**(base | kw))


def test_pixel_centre_grid():
    g = build_grid(2, 4, pixel_centres=True)
    assert torch.allclose(g[0, :, 0], torch.tensor([0.25, 0.75])) and torch.allclose(g[1, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.allclose(g[2], 1 - g[0])


def test_slot_unet_learned_position_embeddings_per_transformer_block():
    unet = SlotConditionedUNet(8, 4, (16, 32, 32), 1, 2, 16, 2, 8, position_embedding="learned")
    # one embedding per transformer block, sized to its level's token grid and width
    shapes = sorted(tuple(p.shape) for p in unet.pos_embeds.values())
    # level 0 (8x8): 1 down + 2 up blocks; level 1 (4x4): 1 down + 2 up; the middle block at level 2 (2x2)
    assert shapes.count((1, 64, 16)) == 3 and shapes.count((1, 16, 32)) == 3 and shapes.count((1, 4, 32)) == 1
    procs = unet.unet.attn_processors
    assert len(procs) == 2 * len(unet.pos_embeds) and all(isinstance(p, PositionalAttnProcessor) for p in procs.values())
    names = {n for n, _ in unet.named_parameters()}
    assert sum(n.startswith("pos_embeds.") for n in names) == len(unet.pos_embeds)  # registered once each
    x, t, s = torch.randn(2, 4, 8, 8), torch.tensor([3, 500]), torch.randn(2, 5, 16)
    y = unet(x, t, s)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.pos_embeds.values())
    with torch.no_grad():
        next(iter(unet.pos_embeds.values())).add_(1.0)
    assert not torch.allclose(unet(x, t, s), y)  # the embedding is used
    plain = SlotConditionedUNet(8, 4, (16, 32, 32), 1, 2, 16, 2, 8, position_embedding=False)
    assert len(plain.pos_embeds) == 0


def test_slot_unet_attention_runs_in_float32_under_cpu_autocast(monkeypatch):
    """Under CPU bf16 autocast the attentions get float32 inputs (PyTorch's bf16 CPU attention is several times
    slower) while the convolutions still run in bf16; the output stays close to the float32 UNet's."""
    import torch.nn.functional as F

    for kind in ("learned", "none"):
        torch.manual_seed(0)
        unet = SlotConditionedUNet(8, 4, (16, 32, 32), 1, 2, 16, 2, 8, position_embedding=kind)
        assert all(isinstance(p, PositionalAttnProcessor) for p in unet.unet.attn_processors.values())
        x, t, s = torch.randn(2, 4, 8, 8), torch.tensor([3, 500]), torch.randn(2, 5, 16)
        reference = unet(x, t, s)
        seen, sdpa = [], F.scaled_dot_product_attention

        def spy(q, k, v, *args, **kwargs):
            seen.append((q.dtype, k.dtype, v.dtype))
            return sdpa(q, k, v, *args, **kwargs)

        monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = unet(x, t, s)
        monkeypatch.undo()
        assert len(seen) == 14 and all(d == (torch.float32,) * 3 for d in seen)  # 7 blocks x self + cross
        assert y.dtype == torch.bfloat16  # the last conv ran under autocast
        assert torch.allclose(y.float(), reference, atol=0.1) and not torch.equal(y.float(), reference)


def test_slot_unet_cartesian_position_embedding_per_attention():
    unet = SlotConditionedUNet(8, 4, (16, 32, 32), 1, 2, 16, 2, 8, position_embedding="cartesian")
    procs = unet.unet.attn_processors
    # the official "cartesian" kind: one projection of the pixel-centre grid per attention (attn1 and attn2 apart)
    assert len(unet.pos_embeds) == len(procs) == 14
    assert all(isinstance(p, PositionalAttnProcessor) and isinstance(p.pos, CartesianEmbedding) for p in procs.values())
    emb = unet.pos_embeds["down_blocks_1_attentions_0_transformer_blocks_0_attn2"]
    grid = build_grid(4, 4, pixel_centres=True).flatten(1).T  # level 1: 4x4 tokens, token i = row-major pixel i
    expected = grid @ emb.proj.weight.T + emb.proj.bias
    assert emb().shape == (1, 16, 32) and torch.allclose(emb()[0], expected)
    assert not any("grid" in k for k in unet.state_dict())  # the grid is rebuilt, not saved
    x, t, s = torch.randn(2, 4, 8, 8), torch.tensor([3, 500]), torch.randn(2, 5, 16)
    y = unet(x, t, s)
    y.square().mean().backward()
    assert all(m.proj.weight.grad.abs().sum() > 0 for m in unet.pos_embeds.values())
    with pytest.raises(ValueError, match="position_embedding"):
        SlotConditionedUNet(8, 4, (16, 32, 32), 1, 2, 16, 2, 8, position_embedding="sincos")


def test_lsd_config_reads_older_boolean_position_embedding():
    assert LatentSlotDiffusionConfig(position_embedding=True).position_embedding == "learned"
    assert LatentSlotDiffusionConfig(position_embedding=False).position_embedding == "none"
    assert LatentSlotDiffusionConfig().position_embedding == "cartesian"
    assert load_config("lsd_demo").model.position_embedding == "learned"


def test_logit_normal_timesteps_follow_their_normal_and_train():
    model = LatentSlotDiffusion(tiny_config(timestep_sampling="logit_normal", timestep_logit_mean=1.0))
    t = model.training_timesteps(20_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() < 1000
    assert t.float().median().item() == pytest.approx(1000 * torch.sigmoid(torch.tensor(1.0)).item(), abs=10)
    assert (t < 100).float().mean().item() < 0.005  # P(sigmoid(z) < 0.1) for z ~ N(1, 1): 0.0007
    uniform = LatentSlotDiffusion(tiny_config()).training_timesteps(20_000, torch.device("cpu"),
                                                                    torch.Generator().manual_seed(0))
    assert (uniform < 100).float().mean().item() == pytest.approx(0.1, abs=0.01)
    out = model(torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 4, 8, 8))
    assert torch.isfinite(out.loss)
    assert load_config("lsd_demo", ["model.timestep_sampling=logit_normal"]).model.timestep_sampling == "logit_normal"


def test_unet_backbone_shape():
    bb = UNetBackbone(32, stem_channels=8, stem_stride=4, block_out_channels=(8, 16), layers_per_block=1,
                      out_channels=12, norm_num_groups=4)
    assert bb(torch.randn(2, 3, 32, 32)).shape == (2, 12, 8, 8)
    model = LatentSlotDiffusion(tiny_config(backbone="unet", resolution=32, backbone_channels=[8, 16], backbone_out=12,
                                            backbone_layers_per_block=1, backbone_norm_groups=4))
    assert model.feature_size == 8


def test_lsd_loss_gradients_noise_schedule_and_sampling():
    torch.manual_seed(0)
    model = LatentSlotDiffusion(tiny_config(cond_dropout=0.5))
    s = model.noise_scheduler
    assert s.config.num_train_timesteps == 1000 and s.config.beta_schedule == "linear"
    assert s.betas[0].item() == pytest.approx(0.00085) and s.betas[-1].item() == pytest.approx(0.012)
    assert s.config.prediction_type == "epsilon"
    images, latents = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 4, 8, 8)
    out = model(images, latents)
    assert out.slots.shape == (4, 3, 16) and out.attn.shape == (4, 3, 64, 3) and torch.isfinite(out.loss)
    out.loss.backward()
    for name in ("encoder.backbone.0.weight", "slot_attention.mu", "to_condition.1.weight", "decoder.unet.conv_in.weight"):
        assert dict(model.named_parameters())[name].grad is not None, name
    for sampler in ("ddim", "dpm"):
        g = torch.Generator().manual_seed(1)
        lat = model.generate(out.slots.detach()[:2], steps=3, sampler=sampler, generator=g)
        assert lat.shape == (2, 4, 8, 8) and torch.isfinite(lat).all()
        again = model.generate(out.slots.detach()[:2], steps=3, sampler=sampler, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(lat, again)  # seeded sampling repeats
    guided = model.generate(out.slots.detach()[:2], steps=3, guidance=3.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(guided, model.generate(out.slots.detach()[:2], steps=3, generator=torch.Generator().manual_seed(1)))
    assert model.sampler("ddim").config.clip_sample is False  # latents are not in [-1, 1]: never clipped
    with pytest.raises(ValueError, match="unknown sampler"):
        model.sampler("euler")


def test_lsd_implicit_differentiation_switch():
    images, latents = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 4, 8, 8)
    grads = {}
    for implicit in (False, True):
        torch.manual_seed(0)  # the same weights: the switch adds no parameters
        model = LatentSlotDiffusion(tiny_config(implicit_grad=implicit))
        assert model.slot_attention.implicit_grad is implicit
        out = model(images, latents, generator=torch.Generator().manual_seed(1))
        out.loss.backward()
        grads[implicit] = (out.loss.detach(), model.slot_attention.mu.grad.clone())
        assert grads[implicit][1].abs().sum() > 0  # the initialisation still learns
    torch.testing.assert_close(grads[False][0], grads[True][0])  # same forward pass
    assert not torch.allclose(grads[False][1], grads[True][1])  # the backward path skips the earlier iterations


def test_lsd_save_load_round_trip(tmp_path):
    model = LatentSlotDiffusion(tiny_config()).eval()
    model.save_pretrained(tmp_path / "m")
    again = LatentSlotDiffusion.from_pretrained(tmp_path / "m").eval()
    assert (tmp_path / "m" / "model.safetensors").is_file()
    images, latents = torch.rand(2, 3, 16, 16), torch.randn(2, 4, 8, 8)
    g = lambda: torch.Generator().manual_seed(0)
    torch.testing.assert_close(model(images, latents, generator=g()).loss, again(images, latents, generator=g()).loss)


def test_lsd_module_steps_with_on_the_fly_latents():
    from slotlab.config import DataConfig, ExperimentConfig, TrainerConfig
    from slotlab.kinds import kind

    ae = ImageAutoencoder(ImageAutoencoderConfig(resolution=16, block_out_channels=[8, 16], norm_num_groups=4))
    cfg = ExperimentConfig(task="lsd", model=tiny_config(), data=DataConfig(resolution=16), trainer=TrainerConfig())
    module = kind("lsd").build_module(cfg)
    module.model.use_autoencoder(ae)
    assert not any(n.startswith("_autoencoder") for n, _ in module.named_parameters())  # frozen, not saved
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "labels": torch.randint(0, 3, (4, 16, 16), dtype=torch.uint8)}
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    module.validation_step(batch, 0)
    assert module.val_metrics.compute()["num_objects"] > 0
    # a cached posterior gives the sample that encoding on the fly draws from the same random stream
    with torch.no_grad():
        mean, std = ae.encode_posterior(batch["image"])
    torch.manual_seed(5)
    on_the_fly = module.latents(batch)
    torch.manual_seed(5)
    cached = module.latents({**batch, "latents": mean, "latents_std": std})
    torch.testing.assert_close(cached, on_the_fly, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cached, mean)


def test_cli_demo_lsd_end_to_end(tmp_path, capsys):
    from slotlab.cli.main import main

    out = tmp_path / "demo"
    ae = ["--autoencoder-set", "optim.max_steps=4", "--autoencoder-set", "trainer.val_every_n_steps=2",
          "--autoencoder-set", "trainer.num_threads=1", "--autoencoder-set", "optim.batch_size=4"]
    sa = ["--slot-attention-set", "optim.max_steps=3", "--slot-attention-set", "trainer.num_threads=1",
          "--slot-attention-set", "optim.batch_size=4"]
    lsd = ["data.train_size=24", "data.val_size=8", "optim.max_steps=4", "trainer.val_every_n_steps=2",
           "trainer.num_threads=1", "optim.batch_size=4"]
    assert main(["demo", "--task", "lsd", "--out", str(out), *ae, *sa, *lsd]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 8 and metrics["steps"] == 4
    # stage 2, the Slot Attention autoencoder, scored on the same scenes, started LSD's encoder and Slot Attention
    assert metrics["slot_attention"]["steps"] == 3 and metrics["slot_attention"]["num_images"] == 8
    assert metrics["warm_start"] == str(out / "slot_attention" / "model")
    lsd_config = yaml.safe_load((out / "lsd" / "model" / "experiment.yaml").read_text())
    assert lsd_config["trainer"]["init_from"] == str((out / "slot_attention" / "model").resolve())
    # LSD trained on the autoencoder's posterior, cached once per scene of the demo's store
    from slotlab.data.store import Store

    posterior = Store(out / "latents")
    assert posterior.attrs["latents_from"] == "posterior" and len(posterior) == 40 and "latents_std" in posterior
    assert lsd_config["data"]["path"] == str(out / "latents") and metrics["data"] == str(out / "data")
    fingerprint = posterior.attrs["autoencoder"]["fingerprint"]
    for k in ("fg_ari", "mbo_objects", "mbo_images", "miou_objects", "miou_images"):
        assert 0 <= metrics[k] <= 1, k
    assert metrics["autoencoder"]["psnr"] > 0
    assert (out / "reconstructions.png").is_file() and (out / "autoencoder" / "model" / "image_autoencoder.json").is_file()
    curve = [json.loads(x) for x in (out / "lsd" / "curve.jsonl").read_text().splitlines()]
    assert {"fg_ari", "mbo_objects", "miou_images"} <= set(curve[-1])
    capsys.readouterr()
    assert main(["reconstruct", "--checkpoint", str(out / "lsd"), "--out", str(out / "r.png"), "--num-images", "2",
                 "--steps", "2", "--sampler", "ddim"]) == 0
    assert (out / "r.png").is_file()
    assert main(["eval", "--checkpoint", str(out / "lsd"), "--out", str(out / "m.json")]) == 0
    assert json.loads((out / "m.json").read_text())["fg_ari_averaged_over"] == "images"
    assert main(["reconstruct", "--checkpoint", str(out / "autoencoder"), "--out", str(out / "x.png")]) == 2
    assert "not a Latent Slot Diffusion model" in capsys.readouterr().err
    # visualize draws an LSD model as reconstruct does with its defaults; an autoencoder gets a one-line error
    assert main(["reconstruct", "--checkpoint", str(out / "lsd"), "--out", str(out / "r2.png"), "--num-images", "2"]) == 0
    assert main(["visualize", "--checkpoint", str(out / "lsd"), "--out", str(out / "v.png"), "--num-images", "2"]) == 0
    assert (out / "v.png").read_bytes() == (out / "r2.png").read_bytes()
    capsys.readouterr()
    # the paper's claim in miniature: the Slot Attention autoencoder on the demo's store, both scored alike
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import lsd_vs_slot_attention

    assert lsd_vs_slot_attention.main(["--demo", str(out), "--minutes", "5", "optim.max_steps=2", "optim.batch_size=4",
                                       "trainer.val_every_n_steps=2", "trainer.num_threads=1",
                                       "data.train_size=24"]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["steps"] == {"lsd": 4, "slot_attention": 2} and comparison["miou_matching"] == "lsd"
    for column in ("lsd", "slot_attention", "slot_attention_attention_masks"):
        assert 0 <= comparison[column]["mbo_objects"] <= 1 and comparison[column]["num_objects"] > 0, column
        assert 0 < comparison[column]["attention_peak"] <= 1, column
    assert "| mBO (objects) |" in (out / "comparison.md").read_text() and (out / "sa_same_minutes" / "grid.png").is_file()
    assert main(["visualize", "--checkpoint", str(out / "autoencoder"), "--out", str(out / "v2.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ImageAutoencoder" in err and len(err.splitlines()) == 1 and not (out / "v2.png").exists()
    # latent caching: encode the demo's store once, then train LSD on the cached latents
    assert main(["data", "cache-latents", str(out / "autoencoder" / "model"), str(out / "data"), str(out / "lat"),
                 "--no-progress"]) == 0
    cached = Store(out / "lat")
    assert cached["latents"].shape == (40, 4, 16, 16) and "labels" in cached
    assert main(["train", "lsd_demo", "--out", str(out / "cached-run"), "--no-progress", f"data.path={out / 'lat'}",
                 "data.val_size=8", "optim.max_steps=2", "trainer.val_every_n_steps=2", "optim.batch_size=4",
                 "trainer.num_threads=1", f"model.autoencoder={out / 'autoencoder' / 'model'}"]) == 0
    capsys.readouterr()
    assert main(["train", "lsd_demo", "--out", str(out / "bad-run"), "--no-progress", f"data.path={out / 'lat'}",
                 "data.val_size=8", "optim.max_steps=1", "model.autoencoder=stabilityai/stable-diffusion-2-1"]) == 2
    assert "holds latents of the autoencoder" in capsys.readouterr().err
    # the demo again in the same folder with another autoencoder: its posterior replaces the stale cache
    assert main(["demo", "--task", "lsd", "--out", str(out), *ae, "--autoencoder-set", "optim.max_steps=3", *sa,
                 *lsd]) == 0
    assert Store(out / "latents").attrs["autoencoder"]["fingerprint"] != fingerprint


def test_register_slots_join_the_condition_and_stay_without_the_slots(tmp_path):
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), register_slots=2, cond_dropout=0.5)
    model = LatentSlotDiffusion(config)
    slots = torch.randn(3, config.num_slots, config.slot_dim)
    cond = model.condition(slots)
    assert cond.shape == (3, config.num_slots + 2, config.cross_attention_dim)
    torch.testing.assert_close(cond[:, -2:], model.registers.expand(3, -1, -1))  # the same tokens for every image
    dropped = model.condition(slots, torch.zeros(3, 1, 1))
    assert dropped[:, :-2].abs().max() == 0 and torch.equal(dropped[:, -2:], cond[:, -2:])  # guidance keeps them
    images, latents = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 4, 8, 8)
    loss = model.train()(images, latents, generator=torch.Generator().manual_seed(0)).loss
    loss.backward()
    assert model.registers.grad is not None and model.registers.grad.abs().sum() > 0  # they learn
    model.eval().save_pretrained(tmp_path / "m")
    again = LatentSlotDiffusion.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(again.registers, model.registers)
    enc = model.encode(images, generator=torch.Generator().manual_seed(0))
    assert enc.attn.shape[-1] == config.num_slots  # registers are not slots: no attention, no mask
    assert LatentSlotDiffusion(tiny_config()).registers is None  # off by default (the paper presets)


def test_slot_reliance_is_zero_for_a_decoder_that_cannot_see_the_slots_and_is_validated():
    torch.manual_seed(0)
    model = LatentSlotDiffusion(tiny_config()).eval()
    latents, slots = torch.randn(4, 4, 8, 8), torch.randn(4, 3, 16)
    reliance = model.slot_reliance(latents, slots, torch.Generator().manual_seed(0))
    assert reliance.ndim == 0 and reliance.abs() > 0  # other images' slots change the prediction
    again = model.slot_reliance(latents, slots, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, reliance)  # the noise and timesteps come from the generator
    for p in model.to_condition.parameters():
        torch.nn.init.zeros_(p)  # every image's condition is the same: nothing of the slots reaches the decoder
    assert model.slot_reliance(latents, slots, torch.Generator().manual_seed(0)).abs() < 1e-6

    from slotlab.evaluation import LatentSlotDiffusionEvaluator

    evaluator = LatentSlotDiffusionEvaluator()
    metrics = evaluator.metrics()
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "latents": latents,
             "labels": torch.randint(0, 3, (4, 16, 16), dtype=torch.uint8)}
    evaluator.update(model, batch, metrics, torch.Generator().manual_seed(0))
    assert abs(metrics.compute()["slot_reliance"]) < 1e-6
    metrics = evaluator.metrics()  # without latents (slotlab eval on a test split): no diffusion loss to compare
    evaluator.update(model, {k: v for k, v in batch.items() if k != "latents"}, metrics, torch.Generator())
    assert "slot_reliance" not in metrics.compute() and "fg_ari" in metrics.compute()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_train_on_their_target_and_sample_back_the_latents(prediction):
    torch.manual_seed(0)
    model = LatentSlotDiffusion(tiny_config(prediction_type=prediction)).eval()
    assert model.noise_scheduler.config.prediction_type == prediction
    assert model.sampler("dpm").config.prediction_type == prediction  # the samplers read the model's predictions so
    for paper in ("lsd_movi_e", "lsd_clevrtex", "lsd_ffhq"):
        assert load_config(paper).model.prediction_type == "epsilon"  # the paper's; the CPU demo predicts latents
    images, latents = torch.rand(3, 3, 16, 16) * 2 - 1, torch.randn(3, 4, 8, 8)
    # the loss is the MSE to the target of this parameterisation, with the noise and t the generator gives
    out = model(images, latents, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    model.encode(images, generator=g)  # the slots draw first
    noise = torch.randn(latents.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    a = model.noise_scheduler.alphas_cumprod[t].reshape(3, 1, 1, 1)
    target = {"epsilon": noise, "sample": latents, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * latents}
    torch.testing.assert_close(out.loss, ((out.noise_pred - target[prediction]) ** 2).mean())

    class Oracle(torch.nn.Module):  # knows the clean latents: predicts exactly what this parameterisation asks
        def forward(self, noisy, t, cond):
            a = model.noise_scheduler.alphas_cumprod[t.long()].reshape(-1, 1, 1, 1)
            eps = (noisy - a.sqrt() * latents) / (1 - a).sqrt()
            return {"epsilon": eps, "sample": latents, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * latents}[
                prediction
            ]

    model.decoder = Oracle()
    for sampler in ("ddim", "dpm"):
        drawn = model.generate(out.slots, steps=10, sampler=sampler, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(drawn, latents, atol=1e-3, rtol=1e-3)
