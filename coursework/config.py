"""The settings a group edits: one dataclass, every field also a command-line option.

Change a default here (it is your group's baseline) or override it for one run::

    python -m coursework.train --epochs 40 --loss dice --run-name dice-only
    python -m coursework.train --mode 3d --patch-size 16 64 64 --batch-size 2
    python -m coursework.train --config results/baseline/config.yaml   # repeat a saved run

Each run saves the resolved settings (and package versions) as ``results/<run-name>/config.yaml``,
so any result can be reproduced from its folder. ``--quick`` applies :data:`QUICK` (a smoke test
that finishes in under a minute on a laptop CPU) before the options you type.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence

from coursework._cli import ArgumentParser
from training.config import ConfigError, add_arguments, config_from_namespace, field

MODES = ("2d", "3d")
NUM_CLASSES = 4  # 0 background, 1 bladder, 2 prostate, 3 rectum
STRUCTURES = {1: "bladder", 2: "prostate", 3: "rectum"}


@dataclasses.dataclass
class CourseworkConfig:
    """Everything one training run of the coursework depends on."""

    # --- the run
    run_name: str = field("baseline", "name of the run; results go to <results-dir>/<run-name>/")
    results_dir: str = field("results", "folder that holds one sub-folder per run")
    seed: int = field(42, "seed for data split, initial weights, shuffling and augmentation", minimum=0)
    # --- the data
    data_dir: str = field(
        "data/pelvic",
        "folder of <case>_img.nii.gz / <case>_mask.nii.gz pairs; the synthetic pelvic phantom is "
        "generated here on first use if the folder does not exist",
    )
    synthetic_cases: int = field(32, "number of synthetic cases generated when data_dir is missing", minimum=3)
    val_fraction: float = field(0.15, "fraction of cases used for validation (model selection)", minimum=0, maximum=1)
    test_fraction: float = field(0.2, "fraction of cases held out for the final test (never for selection)",
                                 minimum=0, maximum=1)
    # --- the model (any name from models.list_models() that builds a segmentation network)
    model: str = field("unet", "model name from the registry (models.list_models())")
    depth: int = field(4, "U-Net down-sampling steps", minimum=1, maximum=8)
    base_filters: int = field(16, "channels of the first U-Net level (doubled per level)", minimum=1)
    norm: str = field("instance", "normalisation layer (instance: no running statistics, so short runs evaluate well)", choices=("batch", "instance", "group", "layer", "none"))
    mode: str = field("2d", "train on 2D axial slices or on 3D patches", choices=MODES)
    patch_size: tuple[int, ...] = field((16, 64, 64), "3D patch (D, H, W) in voxels (mode 3d)", minimum=1)
    patches_per_volume: int = field(8, "3D patches drawn from each training volume per epoch (mode 3d)", minimum=1)
    train_crop: tuple[int, ...] = field(
        (64, 64), "(H, W) random crop of every training batch of slices (mode 2d; empty = whole slices): "
        "less computation per step; validation and prediction use whole slices", minimum=1
    )
    slice_shape: tuple[int, ...] = field(
        (), "(H, W) to centre-pad/crop training slices to, for data whose volumes differ in size "
        "(mode 2d; empty = all volumes share one plane size)", minimum=1
    )
    # --- the training
    loss: str = field("dice_ce", "loss name from training.losses", registry="loss")
    augment: list[str] = field(["flip", "affine"], "augmentation chain, applied in order", registry="augmentation")
    optimizer: str = field("adam", "optimiser name from training.optim", registry="optimizer")
    learning_rate: float = field(2e-3, "peak learning rate", minimum=0)
    # 5 epochs of batches of 8 random 64x64 crops: as many updates as 10 epochs of 16 whole 80x80
    # slices, for a third of the arithmetic (measured: same test Dice band, half the run time).
    epochs: int = field(5, "passes over the training cases", minimum=1)
    batch_size: int = field(8, "slices (2D) or patches (3D) per step", minimum=1)
    steps_per_epoch: int = field(0, "training steps per epoch; 0 = one pass over the training slices/patches", minimum=0)
    max_train_cases: int = field(0, "use at most this many training cases (0 = all): a quick way to shrink a run",
                                 minimum=0)
    stop_after_epochs: int = field(
        0, "stop after this many epochs without changing the schedule (0 = train all epochs); a "
        "partial run like this is not evaluated on the test cases (the marking uses it to check "
        "reproducibility)", minimum=0
    )
    largest_component: bool = field(
        True, "keep only the largest connected component of each structure in predictions (each is one organ)"
    )
    overlays: int = field(3, "number of test cases drawn as prediction-vs-truth overlay PNGs", minimum=0)

    def __post_init__(self):
        # Single values are bounded by their fields (checked where they are parsed); what is
        # left here involves several fields, or a bound a minimum cannot say.
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in (0, 1) and leave cases for training")
        if self.train_crop and len(self.train_crop) != 2:
            raise ValueError(f"train_crop must have 2 values (H, W), got {list(self.train_crop)}")
        if self.slice_shape and len(self.slice_shape) != 2:
            raise ValueError(f"slice_shape must have 2 values (H, W), got {list(self.slice_shape)}")
        if self.mode == "3d" and len(self.patch_size) != 3:
            raise ValueError(f"patch_size must have 3 values (D, H, W) in 3d mode, got {list(self.patch_size)}")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ValueError(f"run_name must be a plain folder name, got {self.run_name!r}")


# A smoke test of the whole pipeline: small synthetic set, small network, few steps.
QUICK: dict = dict(
    run_name="quick",
    data_dir="data/pelvic-quick",
    synthetic_cases=10,
    epochs=4,
    steps_per_epoch=20,
    batch_size=8,
    learning_rate=3e-3,
    overlays=2,
)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--quick``, ``--data DIR`` and one option per config field.

    Its errors are one line (``error: ...``, exit status 2), like every coursework entry point's.
    """
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help="smoke-test settings (under a minute on a laptop CPU)")
    parser.add_argument("--data", dest="data_dir", default=argparse.SUPPRESS, metavar="DIR",
                        help="same as --data-dir: your own folder of <case>_img / <case>_mask NIfTI pairs")
    add_arguments(parser, CourseworkConfig)
    return parser


def resolve(namespace: argparse.Namespace) -> CourseworkConfig:
    """Settings from defaults, then ``--config FILE``, then ``--quick``, then the typed options.

    Raises:
        ConfigError: a bad file or value (the message names it).
    """
    presets = [("--quick", QUICK)] if getattr(namespace, "quick", False) else []
    return config_from_namespace(CourseworkConfig, namespace, presets=presets)


def parse(argv: Sequence[str] | None = None, prog: str = "python -m coursework.train",
          description: str = "Train the coursework model") -> CourseworkConfig:
    """Parse a command line into a :class:`CourseworkConfig` (a bad value exits with one line, status 2)."""
    parser = build_parser(prog, description)
    namespace = parser.parse_args(argv)
    try:
        return resolve(namespace)
    except ConfigError as err:
        parser.error(str(err))
        raise
