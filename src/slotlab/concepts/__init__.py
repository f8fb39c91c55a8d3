"""Visual concept library: K-means clusters of slots (see :mod:`slotlab.concepts.library`)."""

from slotlab.concepts.compose import compose
from slotlab.concepts.library import (
    BACKENDS,
    ConceptLibrary,
    KMeansResult,
    SlotCollection,
    build_library,
    check_library_model,
    collect_slots,
    concept_sheet,
    kmeans,
    library_dataset,
)

__all__ = [
    "BACKENDS",
    "ConceptLibrary",
    "KMeansResult",
    "SlotCollection",
    "build_library",
    "check_library_model",
    "collect_slots",
    "compose",
    "concept_sheet",
    "kmeans",
    "library_dataset",
]
