"""Downstream evaluations of frozen backbones: feature extraction and one module per task."""
