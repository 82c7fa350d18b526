"""Sentence encoders the accurate tier stacks on: the catalog, their pinned weights, run with onnxruntime or numpy."""

from offramp.encoders import (
    mpnet,  # noqa: F401  (registers the mpnet encoder in the catalog)
    static,  # noqa: F401  (registers the static encoders in the catalog)
)
