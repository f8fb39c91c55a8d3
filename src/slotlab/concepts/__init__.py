"""Visual concept library: K-means clusters of slots (see :mod:`slotlab.concepts.library`)."""

from slotlab.concepts.library import (
    BACKENDS,
    ConceptLibrary,
    KMeansResult,
    SlotCollection,
    build_library,
    collect_slots,
    concept_sheet,
    kmeans,
)

__all__ = ["BACKENDS", "ConceptLibrary", "KMeansResult", "SlotCollection", "build_library", "collect_slots",
           "concept_sheet", "kmeans"]
