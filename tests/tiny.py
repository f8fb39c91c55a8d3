"""Tiny randomly initialised models shared by tests (built in milliseconds on a CPU)."""

import torch

from slotlab.models import SlotAutoencoder, SlotAutoencoderConfig
from slotlab.models.image_autoencoder import ImageAutoencoder, ImageAutoencoderConfig
from slotlab.models.lsd import LatentSlotDiffusion, LatentSlotDiffusionConfig


def tiny_autoencoder(seed: int = 0) -> SlotAutoencoder:
    torch.manual_seed(seed)
    return SlotAutoencoder(SlotAutoencoderConfig(
        resolution=16, num_slots=3, slot_dim=16, mlp_hidden=16, encoder_channels=[8, 8], decoder_broadcast=16,
        decoder_channels=[8, 8], decoder_strides=[1, 1], weight_init="torch")).eval()


def tiny_lsd(folder, seed: int = 0) -> LatentSlotDiffusion:
    """A tiny LSD whose config points at a tiny image autoencoder saved in ``folder``/ae."""
    torch.manual_seed(seed)
    ae = ImageAutoencoder(ImageAutoencoderConfig(resolution=16, block_out_channels=[8, 16], norm_num_groups=4))
    ae.save_pretrained(folder / "ae")
    config = LatentSlotDiffusionConfig(
        resolution=16, latent_size=8, backbone="cnn", backbone_channels=[16, 16], backbone_strides=[1, 2],
        num_slots=3, slot_dim=16, mlp_hidden=32, decoder_channels=[16, 32], decoder_layers_per_block=1,
        decoder_attention_levels=1, decoder_heads=2, decoder_norm_groups=8, cross_attention_dim=16,
        autoencoder=str(folder / "ae"))
    return LatentSlotDiffusion(config).eval()
