"""Downstream evaluations of frozen backbones: feature extraction and one module per task."""

CONDITIONING_HISTOGRAM = "histogram.json"
"""File of `cassle eval conditioning`, next to its metrics.json, that `cassle report` draws Fig 3 from (kept here, in a
module that imports nothing, so that the report does not import torch)."""
