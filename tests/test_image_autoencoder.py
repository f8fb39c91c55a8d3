"""The LSD image autoencoder: a tiny diffusers AutoencoderKL of our own, its scaling factor, saving, offline loading
errors, latent caching and the Lightning module (no Trainer)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from slotlab.config import ExperimentConfig
from slotlab.data.datasets import SceneDataset
from slotlab.data.latents import cache_latents
from slotlab.data.store import Store
from slotlab.errors import ConfigError, DataError
from slotlab.kinds import kind
from slotlab.models.image_autoencoder import (
    ImageAutoencoder,
    ImageAutoencoderConfig,
    load_image_autoencoder,
    load_vae,
)


def tiny_config(**kw) -> ImageAutoencoderConfig:
    return ImageAutoencoderConfig(resolution=16, block_out_channels=[8, 16], norm_num_groups=4, **kw)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions: several threads only wait on each other (20x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def model() -> ImageAutoencoder:
    torch.manual_seed(0)
    return ImageAutoencoder(tiny_config())


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_shapes(model):
    x = images()
    assert model.downsample == 2 and model.latent_channels == 4 and model.latent_size == 8
    z = model.encode(x)
    assert z.shape == (4, 4, 8, 8)
    assert torch.equal(model.encode(x, sample=False), model.encode(x, sample=False))
    g1, g2 = (torch.Generator().manual_seed(3) for _ in range(2))
    assert torch.equal(model.encode(x, generator=g1), model.encode(x, generator=g2))
    y = model.decode(z, clamp=True)
    assert y.shape == (4, 3, 16, 16) and y.abs().max() <= 1
    with pytest.raises(ValueError, match="divisible by 2"):
        model.encode(torch.zeros(1, 3, 15, 15))
    with pytest.raises(ConfigError, match="norm_num_groups"):
        ImageAutoencoder(ImageAutoencoderConfig(block_out_channels=[8, 12], norm_num_groups=8))


def test_loss_backward_and_training_lowers_it(model):
    x = images()
    out = model(x)
    assert out.reconstruction.shape == x.shape and out.latents.shape == (4, 4, 8, 8)
    assert torch.isfinite(out.loss) and out.kl > 0
    assert torch.allclose(out.loss, out.mse + 1e-6 * out.kl / (3 * 16 * 16))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss() -> torch.Tensor:
        return model(x, generator=torch.Generator().manual_seed(0)).loss

    first = loss().item()
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * first


def test_scaling_factor_estimate(model):
    batches = [images(4, s) for s in range(3)]
    assert model.needs_scaling_estimate and model.scaling_factor == 1.0
    mode_unscaled = model.encode(batches[0], sample=False)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        z = torch.cat([model.posterior(b).sample(g) for b in batches])
    value = model.estimate_scaling_factor(({"image": b} for b in batches), seed=5)
    assert value == pytest.approx(1 / z.double().std().item(), rel=1e-6)
    assert model.config.scaling_factor == value and not model.needs_scaling_estimate
    assert float(model.latent_scale) == pytest.approx(value)
    torch.testing.assert_close(model.encode(batches[0], sample=False), mode_unscaled * value)
    with torch.no_grad():
        scaled = model.encode(torch.cat(batches), generator=torch.Generator().manual_seed(5))
        assert scaled.std().item() == pytest.approx(1, rel=1e-4)
        z = model.encode(batches[0], sample=False)
        torch.testing.assert_close(model.decode(z), model.vae.decode(z / value).sample)
    # the estimate travels in the state dict (Lightning checkpoints) into a fresh model's config
    fresh = ImageAutoencoder(tiny_config())
    assert fresh.needs_scaling_estimate
    fresh.load_state_dict(model.state_dict())
    assert fresh.config.scaling_factor == pytest.approx(value) and fresh.scaling_factor == pytest.approx(value)


def test_save_load_round_trip(model, tmp_path):
    model.estimate_scaling_factor([images()], seed=1)
    model.save_pretrained(tmp_path / "ae")
    files = sorted(str(p.relative_to(tmp_path / "ae")) for p in (tmp_path / "ae").rglob("*") if p.is_file())
    assert files == ["image_autoencoder.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
    loaded = ImageAutoencoder.from_pretrained(tmp_path / "ae").eval()
    model.eval()  # (train mode differs in the last bits: another attention kernel)
    assert loaded.config == model.config and loaded.scaling_factor == model.scaling_factor
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x, sample=False), model.encode(x, sample=False), rtol=0, atol=0)
        z = model.encode(x, sample=False)
        torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)
    # the folder is also a `pretrained` local folder (subfolder vae): the VAE's config carries the scaling factor
    as_pretrained = ImageAutoencoder(ImageAutoencoderConfig(pretrained=str(tmp_path / "ae"), resolution=16))
    assert as_pretrained.scaling_factor == pytest.approx(model.scaling_factor)
    assert load_image_autoencoder(tmp_path / "ae").config == model.config
    via_vae = load_image_autoencoder(str(tmp_path / "ae" / "vae"), subfolder=None, resolution=16)
    assert via_vae.config.pretrained == str(tmp_path / "ae" / "vae") and via_vae.config.subfolder is None
    with pytest.raises(DataError, match="no image_autoencoder.json"):
        ImageAutoencoder.from_pretrained(tmp_path)


def test_missing_local_folder_is_one_line(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        load_vae(str(tmp_path / "nowhere"), "vae")
    assert "\n" not in str(e.value)


def test_offline_hub_id_says_what_to_fetch(tmp_path):
    code = textwrap.dedent("""
        from slotlab.errors import DataError
        from slotlab.models.image_autoencoder import ImageAutoencoder, ImageAutoencoderConfig
        try:
            ImageAutoencoder(ImageAutoencoderConfig(pretrained="slotlab-test/definitely-missing"))
        except DataError as e:
            print(str(e))
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"),
               DIFFUSERS_VERBOSITY="error")
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    assert "cannot load the VAE slotlab-test/definitely-missing (subfolder vae)" in lines[0]
    assert "hf download slotlab-test/definitely-missing --include 'vae/*'" in lines[0]
    assert "vae/diffusion_pytorch_model.safetensors" in lines[0]


def test_cache_latents(model, tmp_path):
    rng = np.random.default_rng(0)
    data = SceneDataset(rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8),
                        torch.from_numpy(rng.integers(0, 4, (5, 16, 16), dtype=np.uint8)),
                        targets=rng.random((5, 3, 2)).astype(np.float32))
    store = cache_latents(model, data, tmp_path / "lat", batch_size=2, progress=False)
    assert len(store) == 5 and set(store.fields) == {"latents", "image", "labels", "targets"}
    assert store.fields["latents"] == {"dtype": "float32", "shape": [4, 8, 8]}
    with torch.no_grad():
        expected = model.encode(data[torch.arange(5)]["image"], sample=False)
    torch.testing.assert_close(torch.from_numpy(np.array(store["latents"])), expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(store["image"], data.images) and np.array_equal(store["labels"], data.labels.numpy())
    assert np.array_equal(store["targets"], data.extra["targets"])
    assert store.attrs["resolution"] == 16 and store.attrs["latents_from"] == "mode"
    # done: running it again just opens the store; another autoencoder is refused
    assert len(cache_latents(model, data, tmp_path / "lat", batch_size=2, progress=False)) == 5
    with pytest.raises(DataError, match="different conversion"):
        cache_latents(ImageAutoencoder(tiny_config()), data, tmp_path / "lat", progress=False)
    # sampled latents are reproducible; float16 storage
    a, b = (cache_latents(model, data, tmp_path / f"s{i}", batch_size=2, progress=False, sample=True, seed=7,
                          dtype="float16") for i in range(2))
    assert a["latents"].dtype == np.float16 and np.array_equal(a["latents"], b["latents"])
    assert not np.array_equal(a["latents"], store["latents"].astype(np.float16))
    assert isinstance(Store(tmp_path / "s0"), Store)
    # the posterior: its mode as the latents, and the standard deviation that a sample of encode() scales eps by
    post = cache_latents(model, data, tmp_path / "post", batch_size=2, progress=False, posterior=True)
    assert set(post.fields) == {"latents", "latents_std", "image", "labels", "targets"}
    assert post.attrs["latents_from"] == "posterior" and np.array_equal(post["latents"], store["latents"])
    mean, std = torch.from_numpy(np.array(post["latents"])), torch.from_numpy(np.array(post["latents_std"]))
    with torch.no_grad():
        drawn = model.encode(data[torch.arange(5)]["image"], sample=True, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(mean + std * eps, drawn, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exclude each other"):
        cache_latents(model, data, tmp_path / "both", progress=False, sample=True, posterior=True)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_lightning_module_steps():
    config = ExperimentConfig(task="autoencoder", model=tiny_config(kl_weight=1e-3))
    torch.manual_seed(0)
    module = kind("autoencoder").build_module(config)
    assert isinstance(module.model, ImageAutoencoder)
    batch = {"image": images()}
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    module.validation_step(batch, 0)
    value = module.finalize_scaling([batch, {"image": images(4, 1)}])
    assert math.isfinite(value) and value > 0
    assert module.model.config.scaling_factor == value == module.config.model.scaling_factor
    fresh = kind("autoencoder").build_module(ExperimentConfig(task="autoencoder", model=tiny_config()))
    fresh.load_state_dict(module.state_dict())
    assert fresh.model.config.scaling_factor == pytest.approx(value)
    optimizers = module.configure_optimizers()
    assert optimizers["optimizer"].param_groups[0]["params"]
