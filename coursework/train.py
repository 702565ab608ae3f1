"""The main job: train the coursework model, evaluate it on held-out test cases, save everything.

Usage (from the repository root)::

    python -m coursework.train                 # baseline: 2D U-Net on axial slices, a few minutes on a CPU
    python -m coursework.train --quick         # smoke test, under a minute
    python -m coursework.train --data DIR      # your own folder of <case>_img / <case>_mask NIfTI pairs
    python -m coursework.train --mode 3d --patch-size 16 64 64 --run-name unet3d
    python -m coursework.train --resume        # continue an interrupted run (Ctrl-C, SIGTERM, kill -9)
    python -m coursework.train --overwrite     # train again and replace the finished run of that name
    python -m coursework.train --help          # every setting of coursework/config.py

On first use the synthetic pelvic MR dataset is generated into ``data/pelvic`` (reused afterwards).
Cases are split into train / validation / test by case (never by slice). Validation picks the best
epoch; the test cases are used once, at the end, for the numbers you report.

Writes ``results/<run-name>/``:

- ``config.yaml``: the resolved settings, package versions and the machine it ran on;
- ``split.json``: which cases were train, validation and test;
- ``history.csv``: loss and Dice (mean over structures and per structure) per epoch, training and
  validation; ``loss_curves.png`` draws loss and mean Dice;
- ``tensorboard/``: the same curves for TensorBoard (``tensorboard --logdir results``);
- ``model.keras``: the selected model (best validation loss);
- ``metrics.json``: per-structure Dice and HD95 (mm) on the test cases, their means, timings;
- ``overlays/overlay_<case>.png``: prediction vs ground truth on test cases;
- ``predictions/<case>_pred.nii.gz``: test predictions on the input grid, with the input affine.

A run is built in ``results/.<run-name>.incomplete/`` and renamed when complete, so
``results/<run-name>/`` only ever holds finished runs. A finished run is never replaced silently:
the same ``--run-name`` again stops with exit status 2 unless ``--overwrite`` is given. An
interrupted run (Ctrl-C, SIGTERM, SIGKILL, a power cut) keeps its folder with a checkpoint after
every epoch; ``--resume`` with the same options continues from the last completed epoch and ends
with the weights an uninterrupted run would have (bit for bit on CPU), and ``--overwrite`` starts
it afresh. A run that stops with an error (bad data, a diverged loss) leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

from coursework._cli import UserError, hide_tensorflow_start_up_notices, run_cli
from coursework.config import NUM_CLASSES, QUICK, STRUCTURES, CourseworkConfig, build_parser, resolve
from data_utils.environment import freeze_long_lived_objects

SYNTHETIC_DIRS = {CourseworkConfig().data_dir, QUICK["data_dir"]}
CHECKPOINTS = "checkpoints"  # inside the incomplete folder; removed when the run is complete


# ----------------------------------------------------------------------------- data
def ensure_data(cfg: CourseworkConfig) -> Path:
    """The data folder; the synthetic phantom is generated there on first use (kit folders only).

    Raises:
        UserError: a folder given by the user does not exist, or is a file.
    """
    data_dir = Path(cfg.data_dir)
    from data_utils.synthetic import pelvic

    expected = "expected a folder of <case>_img.nii.gz / <case>_mask.nii.gz pairs"
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"{data_dir}: is a file, not a folder ({expected})")
    synthetic = cfg.data_dir in SYNTHETIC_DIRS or (data_dir / pelvic.MANIFEST_NAME).is_file()
    if not data_dir.is_dir() and not synthetic:
        raise UserError(f"{data_dir}: data folder not found ({expected})")
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
        DataError: a missing, corrupt or mismatched file, or labels outside ``0 .. NUM_CLASSES - 1``
            (the message names the file and the values found).
    """
    from coursework import solution
    from data_utils import datasets

    volumes = datasets.load_cases(cases, normalize=None, num_classes=NUM_CLASSES)
    for v in volumes:
        v["image"] = solution.preprocess(v["image"])
    return volumes


def check_foreground(volumes, data_dir: Path) -> None:
    """Refuse a training set whose masks are all background: it would learn to predict nothing."""
    if not any(bool((v["label"] > 0).any()) for v in volumes):
        raise UserError(f"{data_dir}: the {len(volumes)} training case(s) have no foreground labels (every mask "
                        f"voxel is 0); expected structures labelled 1..{NUM_CLASSES - 1}")


def make_datasets(cfg: CourseworkConfig, train, val, start_epoch: int = 0):
    """``tf.data`` pipelines of ``(x, y)`` batches for ``fit`` (2D slices or 3D patches), and steps per epoch.

    The training stream is one endless, seeded sequence of batches; epoch ``e`` is batches
    ``e * steps .. (e + 1) * steps - 1`` of it, and batch ``g`` is augmented with the stateless
    seed ``batch_seed(seed, g)``. A run resumed at ``start_epoch`` skips the batches before it
    (un-augmented, so skipping costs little), and sees exactly the batches an uninterrupted run
    would have seen from there on.

    Args:
        cfg: the run's settings.
        train, val: volumes from :func:`load_volumes`.
        start_epoch: the first epoch to train (``> 0`` when resuming).

    Returns:
        ``(train_ds, val_ds, steps)``: train batches ``(B, *spatial, 1)`` / ``(B, *spatial)``
        from ``start_epoch`` on, the fixed validation set, and training steps per epoch.
    """
    import tensorflow as tf

    from coursework import solution
    from data_utils import augment as augment_lib
    from data_utils import datasets

    if cfg.mode == "2d":
        shape = tuple(cfg.slice_shape) or None
        train_ds = datasets.slice_dataset(train, cfg.batch_size, shuffle=True, seed=cfg.seed, repeat=True,
                                          slice_shape=shape)
        val_ds = datasets.slice_dataset(val, cfg.batch_size, shuffle=False, slice_shape=shape)
        samples = sum(v["image"].shape[0] for v in train)
    else:
        train_ds = datasets.patch_dataset(train, cfg.patch_size, cfg.batch_size, seed=cfg.seed, repeat=True,
                                          patches_per_volume=cfg.patches_per_volume)
        val_ds = datasets.patch_dataset(val, cfg.patch_size, cfg.batch_size, seed=cfg.seed + 1,
                                        patches_per_volume=cfg.patches_per_volume,
                                        new_patches_each_epoch=False)  # every epoch scored on the same patches
        samples = len(train) * cfg.patches_per_volume
    steps = cfg.steps_per_epoch or -(-samples // cfg.batch_size)
    first = start_epoch * steps
    train_ds = train_ds.skip(first)
    chain = solution.augmentation(cfg)
    crop = tuple(cfg.train_crop) if cfg.mode == "2d" else ()
    if chain is not None or crop:
        base = augment_lib.as_seed(cfg.seed)

        # No tensor-dependent Python control flow here: skipping AutoGraph's conversion saves
        # seconds of tracing at the start of every run.
        @tf.autograph.experimental.do_not_convert
        def augment_batch(g, batch):
            seed = augment_lib.batch_seed(base, g)
            batch = chain(batch, seed) if chain is not None else batch
            # The crop comes after the augmentation, so rotated corners fall outside it.
            return random_crop(batch, crop, tf.random.experimental.stateless_fold_in(seed, 1)) if crop else batch

        train_ds = tf.data.Dataset.zip((tf.data.Dataset.range(first, tf.int64.max), train_ds)).map(
            augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    # Both streams keep the kit pipelines' options (no tf.data autotuning) through these maps.
    return train_ds.map(datasets.to_xy).prefetch(tf.data.AUTOTUNE), val_ds.map(datasets.to_xy), steps


def random_crop(batch: dict, size, seed) -> dict:
    """One random ``(h, w)`` window of a batch of slices, the same for image and label.

    Args:
        batch: ``{"image": (B, H, W, 1), "label": (B, H, W), ...}``.
        size: ``(h, w)``; a slice smaller than that is left whole along that axis.
        seed: stateless seed, shape ``[2]``.

    Returns:
        The batch with ``image`` ``(B, h, w, 1)`` and ``label`` ``(B, h, w)``.
    """
    import tensorflow as tf

    shape = tf.shape(batch["label"])
    h, w = tf.minimum(shape[1], size[0]), tf.minimum(shape[2], size[1])
    top = tf.random.stateless_uniform([], seed, 0, shape[1] - h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1), 0, shape[2] - w + 1,
                                       dtype=tf.int32)
    out = dict(batch)
    out["image"] = batch["image"][:, top : top + h, left : left + w]
    out["label"] = batch["label"][:, top : top + h, left : left + w]
    return out


# ----------------------------------------------------------------------------- model
def dice_metrics() -> list:
    """Hard Dice of the epoch: mean over the structures (``dice``) and one per structure (``dice_<name>``).

    Pixel accuracy would read 0.99 on a model that finds no prostate at all (background fills
    most of every slice); foreground Dice is the number the test evaluation reports.
    """
    from training.metrics import DiceMetric

    return [DiceMetric(NUM_CLASSES, name="dice")] + [
        DiceMetric(NUM_CLASSES, class_ids=[value], name=f"dice_{name}") for value, name in STRUCTURES.items()
    ]


def build_and_compile(cfg: CourseworkConfig, spatial_rank: int, steps_per_epoch: int):
    """The network from ``solution.build_model``, compiled with the solution's loss, the optimiser and Dice."""
    from coursework import solution
    from training import optim
    from training.trainer_base import build_optimizers

    input_shape = (None, None, 1) if spatial_rank == 2 else (None, None, None, 1)
    model = solution.build_model(cfg, input_shape, NUM_CLASSES)
    # Cosine decay over the whole run (after a short warm-up): the schedule depends only on the
    # config, so stopping early (stop_after_epochs) does not change the epochs that do run.
    total = cfg.epochs * steps_per_epoch
    optimizer = optim.get(cfg.optimizer, cfg.learning_rate, total_steps=total, schedule="cosine",
                          warmup_steps=total // 20, alpha=0.02)
    model.compile(optimizer=optimizer, loss=solution.build_loss(cfg), metrics=dice_metrics())
    # Create Adam's moment variables now: left to the first step, they make TensorFlow trace the
    # training step twice (measured: the first step takes twice as long).
    build_optimizers(model)
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


def build_callbacks(cfg: CourseworkConfig, run_dir: Path) -> list:
    """The run's callbacks: NaN stop, per-epoch checkpoint (and best epoch), history, figure, TensorBoard.

    The order matters: the checkpoint sets the resumed epoch before the history logger reads it.
    """
    import keras

    from training import callbacks as cbs

    callbacks = [
        cbs.StopOnNaN(),
        cbs.ResumableCheckpoint(str(run_dir / CHECKPOINTS), monitor="val_loss", verbose=True),
        cbs.AtomicCSVLogger(str(run_dir / "history.csv")),
        cbs.LossCurvePlotter(str(run_dir / "history.csv"), str(run_dir / "loss_curves.png"),
                             title=f"{cfg.run_name}: loss and mean foreground Dice", keys=("loss", "dice")),
    ]
    if importlib.util.find_spec("tensorboard") is not None:
        # Scalars per epoch only: graphs and profiles would cost time on every run.
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False, profile_batch=0))
    else:
        print("note: no TensorBoard logs for this run (pip install tensorboard)", file=sys.stderr)
    if cfg.stop_after_epochs:
        callbacks.append(StopAfterEpochs.make(cfg.stop_after_epochs))
    return callbacks


# ----------------------------------------------------------------------------- the run
def completed_epochs(run_dir: Path) -> int:
    """Epochs completed by the (interrupted) run in ``run_dir``: its last checkpoint, 0 if none."""
    from training.callbacks import CheckpointStore

    record = CheckpointStore(str(run_dir / CHECKPOINTS)).latest()
    return int(record["epoch"]) if record else 0


def _check_same_settings(cfg: CourseworkConfig, run_dir: Path) -> None:
    """A resumed run must use the settings it started with (the schedule and data depend on them)."""
    from training.config import ConfigError, load_config, to_dict

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    try:
        saved = to_dict(load_config(CourseworkConfig, saved_path))
    except ConfigError as err:
        raise UserError(f"{saved_path}: cannot be read ({err}); start afresh with --overwrite") from None
    now = to_dict(cfg)
    changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in saved if saved[k] != now[k]]
    if changed:
        raise UserError(f"--resume: the interrupted run used other settings ({'; '.join(changed)}); "
                        "resume with its options, or start afresh with --overwrite")


def train_run(cfg: CourseworkConfig, run_dir: Path) -> dict:
    """Train (from the last checkpoint in ``run_dir``, if any), select by validation loss, evaluate on
    the test cases; write every output into ``run_dir``."""
    from data_utils.io import atomic_write_text

    start = time.perf_counter()
    data_dir = ensure_data(cfg)
    split = split_data(cfg, data_dir)
    # Read every file now, test cases included, so a broken file stops the run before training.
    train_volumes, val_volumes = load_volumes(split["train"]), load_volumes(split["val"])
    load_volumes(split["test"])
    check_foreground(train_volumes, data_dir)
    atomic_write_text(str(run_dir / "split.json"), json.dumps({k: [_case_json(c) for c in v] for k, v in split.items()}, indent=2))

    from coursework import evaluate
    from training import callbacks as cbs
    from training.config import save_config
    from training.reproducibility import package_versions, set_seed

    set_seed(cfg.seed)
    save_config(cfg, run_dir / "config.yaml", extra={"versions": package_versions()})
    initial_epoch = completed_epochs(run_dir)
    try:
        train_ds, val_ds, steps = make_datasets(cfg, train_volumes, val_volumes, start_epoch=initial_epoch)
    except ValueError as err:  # e.g. volumes of different sizes: a data problem the user must fix
        hint = " (set --slice-shape H W)" if "slice_shape" in str(err) else ""
        raise UserError(f"{data_dir}: {err}{hint}") from None
    model = build_and_compile(cfg, 2 if cfg.mode == "2d" else 3, steps)
    freeze_long_lived_objects()
    callbacks = build_callbacks(cfg, run_dir)
    checkpoint = next(c for c in callbacks if isinstance(c, cbs.ResumableCheckpoint))
    stopper = next(c for c in callbacks if isinstance(c, cbs.StopOnNaN))
    print(f"Training {cfg.model} ({cfg.mode}) on {len(split['train'])} cases, validating on {len(split['val'])}; "
          f"{cfg.epochs} epochs x {steps} steps", flush=True)
    train_start = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, steps_per_epoch=steps,
              shuffle=False, callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    train_seconds = time.perf_counter() - train_start
    if stopper.message:
        raise UserError(f"training diverged: {stopper.message}")
    if not (run_dir / "history.csv").is_file():
        raise UserError("training produced no history (no epoch finished)")
    epochs_run = completed_epochs(run_dir)
    if checkpoint.best_weights_path:
        model.load_weights(checkpoint.best_weights_path)  # the epoch with the best validation loss
    model.save(run_dir / "model.keras")
    best_val_loss = checkpoint.best["value"] if checkpoint.best else None

    if cfg.stop_after_epochs and cfg.stop_after_epochs < cfg.epochs:
        # A partial run (reproducibility check): its model is not the run's result, so it is not tested.
        metrics = {"partial_run": True, "epochs_run": epochs_run,
                   "train_seconds": round(train_seconds, 1), "total_seconds": round(time.perf_counter() - start, 1)}
        atomic_write_text(str(run_dir / "metrics.json"), json.dumps(metrics, indent=2) + "\n")
        return metrics
    print(f"Evaluating on {len(split['test'])} held-out test cases (3D, per structure) ...", flush=True)
    test_cases = [(c.case_id, Path(c.image_path), Path(c.label_path)) for c in split["test"]]
    summary = evaluate.evaluate_cases(model, cfg, test_cases, run_dir / "predictions",
                                      overlay_dir=run_dir / "overlays", num_overlays=cfg.overlays)
    metrics = {
        **summary,
        "split": "test",
        "test_cases": [c[0] for c in test_cases],
        "epochs_run": epochs_run,
        "resumed_after_epoch": initial_epoch or None,
        "best_val_loss": best_val_loss,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(str(run_dir / "metrics.json"), json.dumps(metrics, indent=2) + "\n")
    print(evaluate.format_table(summary))
    return metrics


def _case_json(case) -> dict:
    return {"case_id": case.case_id, "image": str(case.image_path), "label": str(case.label_path)}


def incomplete_dir(cfg: CourseworkConfig) -> Path:
    """Where the run ``cfg.run_name`` is built (and kept for ``--resume`` when interrupted)."""
    return Path(cfg.results_dir) / f".{cfg.run_name}.incomplete"


def _remove_leftovers(results: Path, run_name: str) -> None:
    """Temporary folders of this run name left by earlier versions (random suffixes) or a crash mid-swap."""
    for pattern in (f".{run_name}.incomplete-*", f".{run_name}.old*"):
        for path in results.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def prepare_run_dir(cfg: CourseworkConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """The folder to build the run in, after checking what exists under the run's name.

    Raises:
        UserError: the run exists (finished or interrupted) and neither ``resume`` nor ``overwrite``
            says what to do with it, or ``resume`` finds nothing to resume.
    """
    results = Path(cfg.results_dir)
    if results.exists() and not results.is_dir():
        raise UserError(f"{results}: is a file; --results-dir must be a folder")
    final, work = results / cfg.run_name, incomplete_dir(cfg)
    ways = "use --resume to continue it, --overwrite to start afresh, or another --run-name"
    if resume:
        if not work.is_dir():
            if final.exists():
                raise UserError(f"{final}: this run is finished, there is nothing to resume; use --overwrite to "
                                "train it again, or another --run-name")
            raise UserError(f"{work}: no interrupted run named {cfg.run_name!r} to resume; run without --resume")
        _check_same_settings(cfg, work)
        return work
    if work.exists() and not overwrite:
        raise UserError(f"{work}: an interrupted run named {cfg.run_name!r} is kept here; {ways}")
    if final.exists() and not overwrite:
        raise UserError(f"{final}: a finished run of this name exists; use --overwrite to replace it, or another "
                        "--run-name (--resume continues only interrupted runs)")
    results.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(results, cfg.run_name)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    return work


def run(cfg: CourseworkConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Do one run in ``results/.<run-name>.incomplete/`` and move it to ``results/<run-name>/`` when complete.

    Args:
        cfg: the run's settings.
        resume: continue the interrupted run of this name from its last completed epoch.
        overwrite: replace a finished (or interrupted) run of this name.

    Returns:
        The finished run's folder.

    Raises:
        UserError: see :func:`prepare_run_dir`; any problem found on the way.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the message says what was kept and how to go on.
    """
    work = prepare_run_dir(cfg, resume=resume, overwrite=overwrite)
    final = work.parent / cfg.run_name
    try:
        metrics = train_run(cfg, work)
    except KeyboardInterrupt:
        done = completed_epochs(work)
        if done:
            raise KeyboardInterrupt(f"after {done} completed epoch(s); the run is kept in {work}; continue it with "
                                    "the same command and --resume") from None
        if not resume:
            shutil.rmtree(work, ignore_errors=True)
        raise KeyboardInterrupt("before the first epoch completed; nothing was kept") from None
    except BaseException:
        # A failed run leaves nothing half-made; an interrupted run being resumed stays as it was.
        if not resume:
            shutil.rmtree(work, ignore_errors=True)
        raise
    # Kept until now so that a run killed while evaluating resumes without training again.
    shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)
    if final.exists():
        # Keep the previous run until the new one is in place, then drop it.
        old = work.parent / f".{cfg.run_name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, final)
    if "mean_dice" in metrics:
        print(f"mean test Dice {metrics['mean_dice']:.3f}, mean HD95 {metrics['mean_hd95_mm']:.2f} mm; "
              f"results in {final}/ ({metrics['total_seconds']:.0f} s)")
    else:
        print(f"partial run of {metrics['epochs_run']} epoch(s), not evaluated; results in {final}/")
    return final


def main(argv=None) -> int:
    from training.config import ConfigError

    # TensorFlow loads where it is first needed (building the datasets, or checking an option named
    # in the registry), after the checks of the data folder and the run's name: a mistyped path is
    # answered at once. Its start-up notices are hidden whenever that happens.
    hide_tensorflow_start_up_notices()
    parser = build_parser("python -m coursework.train", "Train the coursework model")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--resume", action="store_true",
                      help="continue the interrupted run of this --run-name from its last completed epoch")
    what.add_argument("--overwrite", action="store_true",
                      help="replace the run of this --run-name (finished or interrupted) with a new one")
    namespace = parser.parse_args(argv)
    try:
        cfg = resolve(namespace)
    except ConfigError as err:
        parser.error(str(err))
    return run_cli(lambda: (run(cfg, resume=namespace.resume, overwrite=namespace.overwrite), 0)[1])


if __name__ == "__main__":
    sys.exit(main())
