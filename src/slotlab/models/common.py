"""Pieces the Slot Attention models share: the CNN encoder + Slot Attention built from a config, and the
weight-initialisation switch."""

from __future__ import annotations

from torch import nn

from slotlab.modules import CNNEncoder, SlotAttention, keras_init_


def slot_encoder(c) -> tuple[CNNEncoder, SlotAttention]:
    """CNN encoder (+ position embedding, LN, MLP) and Slot Attention from a config with the shared fields
    (resolution, encoder_*, slot_dim, num_slots, num_iterations, mlp_hidden, attn_eps, ln_eps, slot_init,
    implicit_grad)."""
    encoder = CNNEncoder(c.resolution, c.encoder_channels, c.encoder_kernel, c.encoder_strides, out_dim=c.slot_dim,
                         ln_eps=c.ln_eps, pos_frequencies=c.encoder_pos_frequencies)
    slot_attention = SlotAttention(c.num_slots, c.slot_dim, num_iterations=c.num_iterations, mlp_hidden=c.mlp_hidden,
                                   eps=c.attn_eps, ln_eps=c.ln_eps, init=c.slot_init, implicit_grad=c.implicit_grad)
    return encoder, slot_attention


def init_weights(module: nn.Module, scheme: str) -> None:
    """"keras": Glorot-uniform + zero bias, orthogonal GRU (the official code); "torch": PyTorch's defaults."""
    if scheme == "keras":
        keras_init_(module)
    elif scheme != "torch":
        raise ValueError(f"unknown weight_init {scheme!r}: use 'keras' or 'torch'")
