"""The fixed settings of the evaluation protocols, without torch: the options of `cassle eval TASK` (options.py)
offer them as choices and defaults, and the task modules compute with them."""

from __future__ import annotations

CLASSIFICATION_METRICS = ("top1", "class_avg")
REGRESSION_METRICS = ("r2",)
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
"""Scores of the linear protocol (metrics.py)."""

CORRUPTIONS: tuple[str, ...] = ("brightness", "frost", "fog", "snow")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
"""ImageNet-C's weather corruptions of Table 8 and their severities (corruptions.py)."""

AUGMENTATIONS: tuple[str, ...] = ("crop", "color", "flip", "grayscale", "blur", "identity")
DEFAULT_AUGMENTATIONS: tuple[str, ...] = ("crop", "color", "flip", "grayscale", "blur")
TEMPERATURE = 0.2
"""What `cassle eval sensitivity` measures (the five augmentations of Fig 6) and its InfoNCE temperature."""

DEFAULT_PAIRS = 5000  # the paper's number of pairs
"""Positive pairs of `cassle eval conditioning` (Fig 3)."""

# detectron2's MoCo VOC recipe (pascal_voc_R_50_C4_24k_moco.yaml on Base-RCNN-C4-BN.yaml), for detection.py.
BASE_LR, BASE_BATCH = 0.02, 16
ITERATIONS = 24000
LR_STEPS = (18000, 22000)  # scaled with --iterations: at 3/4 and 11/12 of training
WARMUP_ITERS, WARMUP_FACTOR = 100, 0.001
TRAIN_SIZES: tuple[int, ...] = tuple(range(480, 801, 32))
TEST_SIZE, MAX_SIZE = 800, 1333
ROIS_PER_IMAGE = 512
