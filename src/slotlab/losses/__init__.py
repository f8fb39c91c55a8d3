"""Training losses."""

from slotlab.losses.hungarian import (
    HungarianMatch,
    hungarian_huber_loss,
    match,
    pairwise_huber,
)

__all__ = ["HungarianMatch", "hungarian_huber_loss", "match", "pairwise_huber"]
