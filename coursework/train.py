"""The main job: train the coursework model, evaluate it on held-out test cases, save everything.

Usage (from the repository root)::

    python -m coursework.train                 # baseline: 2D U-Net on axial slices, a few minutes on a CPU
    python -m coursework.train --quick         # smoke test, under a minute
    python -m coursework.train --data DIR      # your own folder of <case>_img / <case>_mask NIfTI pairs
    python -m coursework.train --mode 3d --patch-size 16 64 64 --run-name unet3d
    python -m coursework.train --help          # every setting of coursework/config.py

On first use the synthetic pelvic MR dataset is generated into ``data/pelvic`` (reused afterwards).
Cases are split into train / validation / test by case (never by slice). Validation picks the best
epoch; the test cases are used once, at the end, for the numbers you report.

Writes ``results/<run-name>/``:

- ``config.yaml``: the resolved settings, package versions and the machine it ran on;
- ``split.json``: which cases were train, validation and test;
- ``history.csv`` and ``loss_curves.png``: loss and metrics per epoch;
- ``model.keras``: the selected model (best validation loss);
- ``metrics.json``: per-structure Dice and HD95 (mm) on the test cases, their means, timings;
- ``overlays/overlay_<case>.png``: prediction vs ground truth on test cases;
- ``predictions/<case>_pred.nii.gz``: test predictions on the input grid, with the input affine.

The folder is built under a temporary name and renamed when complete: a run that fails or is
interrupted leaves no ``results/<run-name>/`` behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from coursework._cli import UserError, run_cli
from coursework.config import NUM_CLASSES, QUICK, CourseworkConfig, parse

SYNTHETIC_DIRS = {CourseworkConfig().data_dir, QUICK["data_dir"]}


# ----------------------------------------------------------------------------- data
def ensure_data(cfg: CourseworkConfig) -> Path:
    """The data folder; the synthetic phantom is generated there on first use (kit folders only).

    Raises:
        UserError: a folder given by the user does not exist.
    """
    data_dir = Path(cfg.data_dir)
    from data_utils.synthetic import pelvic

    synthetic = cfg.data_dir in SYNTHETIC_DIRS or (data_dir / pelvic.MANIFEST_NAME).is_file()
    if not data_dir.is_dir() and not synthetic:
        raise UserError(f"{data_dir}: data folder not found (expected <case>_img.nii.gz / <case>_mask.nii.gz pairs)")
    if synthetic:
        if not (data_dir / pelvic.MANIFEST_NAME).is_file():
            print(f"Generating the synthetic pelvic MR dataset ({cfg.synthetic_cases} cases) in {data_dir} (first use) ...", flush=True)
        pelvic.generate_pelvic_dataset(data_dir, num_cases=cfg.synthetic_cases, seed=0)
    return data_dir


def split_data(cfg: CourseworkConfig, data_dir: Path) -> dict[str, list[dict]]:
    """Find the case pairs and split them by case into ``train`` / ``val`` / ``test``."""
    from data_utils.datasets import find_cases, split_cases

    cases = find_cases(data_dir)
    if len(cases) < 3:
        raise UserError(f"{data_dir}: found {len(cases)} image/mask pair(s); need at least 3 (train, validation, test)")
    split = split_cases(cases, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    if cfg.max_train_cases:
        split["train"] = split["train"][: cfg.max_train_cases]
    return split


def load_volumes(cases) -> list[dict]:
    """Load cases in the kit's ``(D, H, W)`` layout, normalised by ``solution.preprocess``.

    Raises:
        DataError: a missing, corrupt or mismatched file (the message names it).
    """
    from coursework import solution
    from data_utils import datasets

    volumes = datasets.load_cases(cases, normalize=None)
    for v in volumes:
        v["image"] = solution.preprocess(v["image"])
    return volumes


def make_datasets(cfg: CourseworkConfig, train, val):
    """``tf.data`` pipelines of ``(x, y)`` batches for ``fit`` (2D slices or 3D patches), and steps per epoch.

    Args:
        cfg: the run's settings.
        train, val: volumes from :func:`load_volumes`.
    """
    from coursework import solution
    from data_utils import datasets

    augment = solution.augmentation(cfg)
    repeat = bool(cfg.steps_per_epoch)
    if cfg.mode == "2d":
        shape = tuple(cfg.slice_shape) or None
        train_ds = datasets.slice_dataset(train, cfg.batch_size, shuffle=True, seed=cfg.seed, augment=augment,
                                          repeat=repeat, slice_shape=shape)
        val_ds = datasets.slice_dataset(val, cfg.batch_size, shuffle=False, slice_shape=shape)
        samples = sum(v["image"].shape[0] for v in train)
    else:
        patches = 8
        train_ds = datasets.patch_dataset(train, cfg.patch_size, cfg.batch_size, seed=cfg.seed, augment=augment,
                                          patches_per_volume=patches, repeat=repeat)
        val_ds = datasets.patch_dataset(val, cfg.patch_size, cfg.batch_size, seed=cfg.seed + 1, patches_per_volume=patches,
                                        new_patches_each_epoch=False)  # every epoch scored on the same patches
        samples = len(train) * patches
    steps = cfg.steps_per_epoch or -(-samples // cfg.batch_size)
    return train_ds.map(datasets.to_xy), val_ds.map(datasets.to_xy), steps


# ----------------------------------------------------------------------------- model
def build_and_compile(cfg: CourseworkConfig, spatial_rank: int, steps_per_epoch: int):
    """The network from ``solution.build_model``, compiled with the solution's loss and the optimiser."""
    import keras

    from coursework import solution
    from training import optim

    input_shape = (None, None, 1) if spatial_rank == 2 else (None, None, None, 1)
    model = solution.build_model(cfg, input_shape, NUM_CLASSES)
    # Cosine decay over the whole run (after a short warm-up): the schedule depends only on the
    # config, so stopping early (stop_after_epochs) does not change the epochs that do run.
    total = cfg.epochs * steps_per_epoch
    schedule = optim.make_schedule("cosine", cfg.learning_rate, decay_steps=max(1, total - total // 20),
                                   warmup_steps=total // 20, alpha=0.02)
    optimizer = optim.get_optimizer(cfg.optimizer, schedule)
    model.compile(optimizer=optimizer, loss=solution.build_loss(cfg), metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


class StopAfterEpochs:
    """Factory of a callback that ends training after ``n`` epochs without changing the schedule."""

    @staticmethod
    def make(n: int):
        import keras

        class _Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 >= n:
                    self.model.stop_training = True

        return _Stop()


# ----------------------------------------------------------------------------- the run
def train_run(cfg: CourseworkConfig, run_tmp: Path) -> dict:
    """Train, select by validation loss, evaluate on the test cases; write every output into ``run_tmp``."""
    start = time.perf_counter()
    data_dir = ensure_data(cfg)
    split = split_data(cfg, data_dir)
    # Read every file now, test cases included, so a broken file stops the run before training.
    train_volumes, val_volumes = load_volumes(split["train"]), load_volumes(split["val"])
    load_volumes(split["test"])
    (run_tmp / "split.json").write_text(json.dumps({k: [_case_json(c) for c in v] for k, v in split.items()}, indent=2))

    import keras

    from coursework import evaluate
    from training import callbacks as cbs
    from training.config import save_config
    from training.reproducibility import package_versions, set_seed

    set_seed(cfg.seed)
    save_config(cfg, run_tmp / "config.yaml", extra={"versions": package_versions()})
    try:
        train_ds, val_ds, steps = make_datasets(cfg, train_volumes, val_volumes)
    except ValueError as err:  # e.g. volumes of different sizes: a data problem the user must fix
        hint = " (set --slice-shape H W)" if "slice_shape" in str(err) else ""
        raise UserError(f"{data_dir}: {err}{hint}") from None
    model = build_and_compile(cfg, 2 if cfg.mode == "2d" else 3, steps)
    best = run_tmp / "best.weights.h5"
    callbacks = [
        cbs.StopOnNaN(),
        cbs.AtomicCSVLogger(str(run_tmp / "history.csv")),
        cbs.LossCurvePlotter(str(run_tmp / "history.csv"), str(run_tmp / "loss_curves.png")),
        keras.callbacks.ModelCheckpoint(str(best), monitor="val_loss", save_best_only=True, save_weights_only=True, verbose=0),
    ]
    if cfg.stop_after_epochs:
        callbacks.append(StopAfterEpochs.make(cfg.stop_after_epochs))
    print(f"Training {cfg.model} ({cfg.mode}) on {len(split['train'])} cases, validating on {len(split['val'])}; "
          f"{cfg.epochs} epochs x {steps} steps", flush=True)
    train_start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs,
                        steps_per_epoch=steps if cfg.steps_per_epoch else None,
                        shuffle=False, callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    train_seconds = time.perf_counter() - train_start
    if any(isinstance(c, cbs.StopOnNaN) and c.message for c in callbacks):
        raise UserError("training diverged (non-finite loss); try a lower --learning-rate")
    if not (run_tmp / "history.csv").is_file():
        raise UserError("training produced no history (no epoch finished)")
    if best.is_file():
        model.load_weights(str(best))  # the epoch with the best validation loss
        best.unlink()
    if not (run_tmp / "loss_curves.png").is_file():
        cbs.plot_history(str(run_tmp / "history.csv"), str(run_tmp / "loss_curves.png"))
    model.save(run_tmp / "model.keras")

    if cfg.stop_after_epochs and cfg.stop_after_epochs < cfg.epochs:
        # A partial run (reproducibility check): its model is not the run's result, so it is not tested.
        metrics = {"partial_run": True, "epochs_run": len(history.history.get("loss", [])),
                   "train_seconds": round(train_seconds, 1), "total_seconds": round(time.perf_counter() - start, 1)}
        (run_tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics
    print(f"Evaluating on {len(split['test'])} held-out test cases (3D, per structure) ...", flush=True)
    test_cases = [(c.case_id, Path(c.image_path), Path(c.label_path)) for c in split["test"]]
    summary = evaluate.evaluate_cases(model, cfg, test_cases, run_tmp / "predictions",
                                      overlay_dir=run_tmp / "overlays", num_overlays=cfg.overlays)
    metrics = {
        **summary,
        "split": "test",
        "test_cases": [c[0] for c in test_cases],
        "epochs_run": len(history.history.get("loss", [])),
        "best_val_loss": float(min(history.history["val_loss"])) if history.history.get("val_loss") else None,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    (run_tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(evaluate.format_table(summary))
    return metrics


def _case_json(case) -> dict:
    return {"case_id": case.case_id, "image": str(case.image_path), "label": str(case.label_path)}


def run(cfg: CourseworkConfig) -> Path:
    """Do one run in a temporary folder and move it to ``results/<run-name>/`` only when complete."""
    results = Path(cfg.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    final = results / cfg.run_name
    run_tmp = Path(tempfile.mkdtemp(prefix=f".{cfg.run_name}.incomplete-", dir=results))
    try:
        metrics = train_run(cfg, run_tmp)
        if final.exists():
            # Keep the previous run until the new one is in place, then drop it.
            old = Path(tempfile.mkdtemp(prefix=f".{cfg.run_name}.old-", dir=results))
            os.replace(final, old / "run")
            os.replace(run_tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(run_tmp, final)
    finally:
        if run_tmp.exists():
            shutil.rmtree(run_tmp, ignore_errors=True)
    if "mean_dice" in metrics:
        print(f"mean test Dice {metrics['mean_dice']:.3f}, mean HD95 {metrics['mean_hd95_mm']:.2f} mm; "
              f"results in {final}/ ({metrics['total_seconds']:.0f} s)")
    else:
        print(f"partial run of {metrics['epochs_run']} epoch(s), not evaluated; results in {final}/")
    return final


def main(argv=None) -> int:
    cfg = parse(argv)
    return run_cli(lambda: (run(cfg), 0)[1])


if __name__ == "__main__":
    sys.exit(main())
