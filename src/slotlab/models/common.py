"""Pieces the Slot Attention models share: the CNN encoder + Slot Attention built from a config, and the
weight-initialisation switch."""

from __future__ import annotations

from typing import Literal

from torch import nn

from slotlab.modules import CNNEncoder, InvariantSlotAttention, SlotAttention, keras_init_
from slotlab.modules.slot_attention import SlotInit
from slotlab.modules.slot_mlp import SlotMLPBaseline

SlotFrame = Literal["none", "translation", "translation_scale"]  # Invariant Slot Attention's reference frames
WeightInit = Literal["keras", "torch"]  # Glorot-uniform + zero bias, orthogonal GRU (official code) / PyTorch's

__all__ = ["SlotFrame", "SlotInit", "WeightInit", "init_weights", "slot_encoder"]


def slot_encoder(c) -> tuple[CNNEncoder, SlotAttention | InvariantSlotAttention | SlotMLPBaseline]:
    """CNN encoder (+ position embedding, LN, MLP) and Slot Attention from a config with the shared fields
    (resolution, encoder_*, slot_dim, num_slots, num_iterations, eval_iterations, mlp_hidden, attn_eps, ln_eps,
    slot_init, implicit_grad, slot_frame, slot_scale_factor). With a ``slot_frame`` (Invariant Slot Attention) the
    encoder adds no absolute positions: the slots add them in their own frames."""
    framed = c.slot_frame != "none"
    encoder = CNNEncoder(
        c.resolution,
        c.encoder_channels,
        c.encoder_kernel,
        c.encoder_strides,
        out_dim=c.slot_dim,
        ln_eps=c.ln_eps,
        pos_frequencies=c.encoder_pos_frequencies,
        position_embedding=not framed,
    )
    kwargs = dict(
        num_iterations=c.num_iterations,
        eval_iterations=c.eval_iterations,
        mlp_hidden=c.mlp_hidden,
        eps=c.attn_eps,
        ln_eps=c.ln_eps,
        init=c.slot_init,
        implicit_grad=c.implicit_grad,
    )
    if c.grouping == "mlp":
        if framed or c.slot_heads != 1 or c.slot_init != "gaussian":
            raise ValueError("the Slot MLP baseline (grouping mlp) takes no slot_frame, slot_heads or slot_init")
        return encoder, SlotMLPBaseline(c.num_slots, c.slot_dim, ln_eps=c.ln_eps)
    if framed:
        if c.slot_heads != 1:
            raise ValueError("multi-head Slot Attention (slot_heads > 1) is not available with a slot_frame")
        if c.encoder_pos_frequencies:
            raise ValueError("encoder_pos_frequencies needs the absolute position embedding: not with a slot_frame")
        slot_attention: SlotAttention = InvariantSlotAttention(
            c.num_slots,
            c.slot_dim,
            encoder.feature_size,
            frame=c.slot_frame,
            scale_factor=c.slot_scale_factor,
            **kwargs,
        )
    else:
        slot_attention = SlotAttention(c.num_slots, c.slot_dim, num_heads=c.slot_heads, **kwargs)
    return encoder, slot_attention


def init_weights(module: nn.Module, scheme: WeightInit) -> None:
    """ "keras": Glorot-uniform + zero bias, orthogonal GRU (the official code); "torch": PyTorch's defaults."""
    if scheme == "keras":
        keras_init_(module)
    elif scheme != "torch":
        raise ValueError(f"unknown weight_init {scheme!r}: use 'keras' or 'torch'")
