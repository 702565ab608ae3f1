"""Callbacks that make long runs safe: atomic checkpoints with resume, a NaN stop, a CSV log, loss curves.

Files are written with ``data_utils.io``'s atomic writers; each callback below says in one line why
it is kept instead of its Keras counterpart.

They work with ``model.fit(...)`` and with the explicit loop ``training.loop.train(...)`` alike::

    callbacks = [
        StopOnNaN(),                                   # first, so the others see the stop
        ResumableCheckpoint("results/run1/checkpoints"),
        AtomicCSVLogger("results/run1/history.csv"),
        LossCurvePlotter("results/run1/history.csv", "results/run1/loss.png"),
    ]
    model.fit(ds, epochs=50, callbacks=callbacks)     # killed at epoch 17? run the same line again:
                                                       # it restarts at epoch 17 (or 16) from disk.

Why not ``keras.callbacks.BackupAndRestore``? In Keras 3.15 it writes the weights file in place
(``save_weights(..., overwrite=True)``) and then the JSON metadata in place: a kill during either
write leaves a truncated file (it then falls back to a ``.bkp`` copy, which is itself made by an
in-place copy), and weights and epoch can disagree. It also only builds ``model.optimizer``, so a
trainer with two optimisers resumes with fresh optimiser state, and it happily saves NaN weights.
Here every file is written under a temporary name in the same folder and moved into place with
``os.replace`` (atomic on POSIX and Windows), and a single small JSON file names the epoch and the
weights file together, so the pair on disk is always consistent.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
import time

import keras
import numpy as np

from data_utils.io import atomic_save_weights, atomic_write, atomic_write_text
from training.trainer_base import build_optimizers
from training.distribute import is_chief


# --------------------------------------------------------------------------------------------
# Weight checks
# --------------------------------------------------------------------------------------------
def weights_are_finite(model: keras.Model) -> bool:
    """True if no trainable or non-trainable weight of ``model`` holds a NaN or an infinity."""
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight.value if hasattr(weight, "value") else weight)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            return False
    return True


def _finite_logs(logs: dict | None) -> bool:
    for value in (logs or {}).values():
        try:
            if not math.isfinite(float(value)):
                return False
        except (TypeError, ValueError):
            continue
    return True


def _is_chief(model: keras.Model) -> bool:
    """True on the process that writes files: the chief of ``model``'s strategy (see ``distribute.is_chief``)."""
    return is_chief(getattr(model, "distribute_strategy", None))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
class CheckpointStore:
    """A folder of atomic checkpoints: ``checkpoint.json`` names the last good epoch and its weights.

    Layout::

        directory/checkpoint.json              {"epoch": 5, "weights": "epoch-0005.weights.h5", ...}
        directory/epoch-0005.weights.h5        model + optimiser variables after 5 epochs
        directory/epoch-0004.weights.h5        the one before (``keep=2``)

    Args:
        directory: the folder (created on first save).
        keep: how many weight files to keep (>= 1).
    """

    INDEX = "checkpoint.json"

    def __init__(self, directory: str, keep: int = 2):
        if keep < 1:
            raise ValueError(f"CheckpointStore: keep must be >= 1; got {keep}")
        self.directory = str(directory)
        self.keep = int(keep)

    @property
    def index_path(self) -> str:
        return os.path.join(self.directory, self.INDEX)

    def latest(self) -> dict | None:
        """The last good checkpoint's record (``{"epoch", "weights", "logs", "time"}``) or ``None``."""
        if not os.path.exists(self.index_path):
            return None
        with open(self.index_path, encoding="utf-8") as f:
            record = json.load(f)
        if not os.path.exists(os.path.join(self.directory, record["weights"])):
            raise FileNotFoundError(
                f"{self.index_path} names {record['weights']}, which is missing; delete the folder to start afresh"
            )
        return record

    def save(self, model: keras.Model, epoch: int, logs: dict | None = None, extra: dict | None = None,
             same_as: str | None = None) -> bool:
        """Save ``model`` (and its optimisers) as the state after ``epoch`` completed epochs.

        Refuses to save NaN/inf weights or a NaN/inf loss, so the last good checkpoint survives.

        Args:
            model: a built model.
            epoch: number of completed epochs (training resumes at this epoch index).
            logs: the epoch's logs, stored in the index for reference.
            extra: further JSON-friendly entries for the index (moved into place with it).
            same_as: a weight file written from ``model`` in its current state (the best-epoch file
                of this epoch): copied instead of serialising the model a second time (the coursework
                U-Net's 24 MB file, measured on a busy 2-core machine: 0.01-0.04 s against 0.4-0.55 s).

        Returns:
            True if written, False if refused because something was not finite.
        """
        if not _finite_logs(logs) or not weights_are_finite(model):
            kept = self.latest() if os.path.exists(self.index_path) else None
            what = (f"the last good checkpoint (epoch {kept['epoch']}) stays in {self.directory}" if kept
                    else "no earlier checkpoint exists")
            print(f"[checkpoint] not saving epoch {epoch}: non-finite loss or weights; {what}", file=sys.stderr)
            return False
        name = f"epoch-{int(epoch):04d}.weights.h5"
        if same_as:
            atomic_write(os.path.join(self.directory, name), lambda tmp: shutil.copyfile(same_as, tmp), ".weights.h5")
        else:
            atomic_save_weights(model, os.path.join(self.directory, name))
        record = {
            "epoch": int(epoch),
            "weights": name,
            "logs": {k: float(v) for k, v in (logs or {}).items() if _is_number(v)},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **(extra or {}),
        }
        # The index moves last: until it does, the previous pair (index, weights) is the valid one.
        atomic_write_text(self.index_path, json.dumps(record, indent=2))
        self._prune(keep_name=name)
        return True

    def restore(self, model: keras.Model) -> int:
        """Load the last good checkpoint into ``model``; returns its epoch (0 when there is none).

        Args:
            model: built with the same architecture (and optimisers) as the saved one.
        """
        record = self.latest()
        if record is None:
            return 0
        if not model.built:
            raise ValueError(
                "CheckpointStore.restore: build the model (call it on a batch, or give it an Input) "
                f"before restoring from {self.directory}"
            )
        build_optimizers(model)
        model.load_weights(os.path.join(self.directory, record["weights"]))
        return int(record["epoch"])

    def _prune(self, keep_name: str) -> None:
        names = sorted(
            n for n in os.listdir(self.directory) if n.startswith("epoch-") and n.endswith(".weights.h5")
        )
        old = [n for n in names if n != keep_name][: max(0, len(names) - self.keep)]
        # Best-epoch weights other than the one the index names are from epochs no longer best.
        best = (self.latest() or {}).get("best", {}).get("weights")
        old += [n for n in os.listdir(self.directory) if n.startswith("best-") and n != best]
        for name in old:
            os.remove(os.path.join(self.directory, name))


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


class ResumableCheckpoint(keras.callbacks.Callback):
    """Save model + optimiser state + epoch atomically after every epoch; resume from it on start.

    On ``on_train_begin`` the last good checkpoint (if any) is loaded and training continues at the
    next epoch, so a killed run loses at most the epoch it was in. Works with ``fit()`` (through
    Keras' ``model._initial_epoch``, the hook ``BackupAndRestore`` uses) and with
    ``training.loop.train``. Only the chief writes in multi-worker runs; every worker restores.
    The data pipeline starts afresh on resume: a dataset shuffled with a fixed seed and
    ``reshuffle_each_iteration`` gives epoch k+1 the order of a fresh run's first epoch, so a
    resumed run matches an uninterrupted one exactly only when the order does not depend on the epoch.

    With ``monitor`` it also keeps the weights of the best epoch so far (lowest ``val_loss``, say)
    as ``best-epoch-NNNN.weights.h5``, named in the same index: what ``ModelCheckpoint(save_best_only=True)``
    does, but written atomically and remembered across a resume (a fresh ``ModelCheckpoint`` would
    forget the best value and overwrite the file with the first resumed epoch).

    Args:
        directory: folder for the checkpoints (see :class:`CheckpointStore`).
        keep: number of weight files kept.
        verbose: print a line when resuming.
        monitor: a log key (``"val_loss"``) whose best epoch is kept; ``None`` keeps none.
        mode: ``"min"`` or ``"max"``: which direction of ``monitor`` is better.

    Attributes:
        best: ``None`` or ``{"monitor", "value", "epoch", "weights"}`` of the best epoch so far.
    """

    def __init__(self, directory: str, keep: int = 2, verbose: bool = True, monitor: str | None = None,
                 mode: str = "min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"ResumableCheckpoint: mode must be 'min' or 'max'; got {mode!r}")
        self.store = CheckpointStore(directory, keep=keep)
        self.verbose = verbose
        self.monitor, self.mode = monitor, mode
        self.resumed_from = 0
        self.best: dict | None = None

    @property
    def best_weights_path(self) -> str | None:
        """The weight file of the best epoch so far (``None`` without ``monitor`` or before one)."""
        return os.path.join(self.store.directory, self.best["weights"]) if self.best else None

    def on_train_begin(self, logs=None):
        self.resumed_from = self.store.restore(self.model)
        record = self.store.latest() if self.resumed_from else None
        self.best = (record or {}).get("best")
        if self.resumed_from:
            self.model._initial_epoch = self.resumed_from
            if self.verbose:
                print(f"[checkpoint] resuming after epoch {self.resumed_from} from {self.store.directory}")

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best["value"] if self.mode == "min" else value > self.best["value"]

    def on_epoch_end(self, epoch, logs=None):
        if not _is_chief(self.model):
            return
        best, best_path = self.best, None
        value = (logs or {}).get(self.monitor) if self.monitor else None
        if value is not None and _is_number(value) and self._improved(float(value)) and weights_are_finite(self.model):
            best = {"monitor": self.monitor, "value": float(value), "epoch": epoch + 1,
                    "weights": f"best-epoch-{epoch + 1:04d}.weights.h5"}
            # Written before the index that names it, so the index never points at a missing file.
            best_path = os.path.join(self.store.directory, best["weights"])
            atomic_save_weights(self.model, best_path)
        if self.store.save(self.model, epoch + 1, logs, extra={"best": best} if best else None, same_as=best_path):
            self.best = best

    def on_train_end(self, logs=None):
        # fit() keeps reading _initial_epoch on later calls; do not leak the resume point into them.
        self.model._initial_epoch = None


class StopOnNaN(keras.callbacks.Callback):
    """Stop training at the first NaN/inf loss, naming the epoch and batch where it happened.

    Kept instead of ``keras.callbacks.TerminateOnNaN``, which watches only ``logs["loss"]`` (not a
    trainer's ``d_loss``/``g_loss``) and leaves no record of where and why it stopped.

    Put it first in the callback list. Checkpoints are not overwritten afterwards: the
    :class:`CheckpointStore` refuses non-finite losses and weights.

    Attributes:
        message: ``None``, or the text printed when training was stopped.
        stopped_at: ``None``, or ``(epoch, batch)`` (both 1-based) of the first non-finite loss.
    """

    def __init__(self, keys: tuple[str, ...] | None = None):
        super().__init__()
        self.keys = keys
        self.message = None
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for name, value in (logs or {}).items():
            if self.keys is not None and name not in self.keys:
                continue
            if self.keys is None and "loss" not in name:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                self.stopped_at = (self._epoch + 1, batch + 1)
                # What happens to checkpoints is the checkpoint's business (it refuses this
                # epoch and says what it keeps); this message states only what is known here.
                self.message = (
                    f"Non-finite {name} = {value} at epoch {self._epoch + 1}, batch {batch + 1}; "
                    "training stopped. Try a lower learning rate, gradient clipping, or check the data for NaN."
                )
                print(f"[StopOnNaN] {self.message}", file=sys.stderr)
                self.model.stop_training = True
                return


# --------------------------------------------------------------------------------------------
# History as CSV, and loss curves
# --------------------------------------------------------------------------------------------
def read_history_csv(path: str) -> dict[str, list[float]]:
    """Read a history CSV (``epoch`` column + one column per logged value) into lists by column."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"history CSV not found: {path}")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        raise ValueError(f"{path}: expected a CSV with a header row starting with 'epoch'")
    columns = {key: [] for key in rows[0]}
    for row in rows:
        for key in columns:
            value = row.get(key, "")
            columns[key].append(float(value) if value not in ("", None) else float("nan"))
    return columns


class AtomicCSVLogger(keras.callbacks.Callback):
    """Write the epoch logs to a CSV file, rewriting it atomically after every epoch.

    Kept instead of ``keras.callbacks.CSVLogger``, which appends in place (a kill leaves half a row)
    and, resumed with ``append=True``, writes the epochs after the checkpoint a second time.

    On resume, rows for epochs after the resumed epoch are replaced, so the file never holds the
    same epoch twice (list it after :class:`ResumableCheckpoint`, which sets the resumed epoch).
    A fresh run (no resume) starts a new file.

    Args:
        path: the CSV file (``epoch`` column is 1-based: the number of completed epochs).
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = str(path)
        self.rows: list[dict] = []

    def on_train_begin(self, logs=None):
        self.rows = []
        if os.path.exists(self.path):
            start = getattr(self.model, "_initial_epoch", None) or 0
            with open(self.path, encoding="utf-8", newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(float(r["epoch"])) <= start]

    def on_epoch_end(self, epoch, logs=None):
        if not _is_chief(self.model):
            return
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items() if _is_number(v)})
        self.rows = [r for r in self.rows if int(float(r["epoch"])) < epoch + 1] + [row]
        keys = ["epoch"] + sorted({k for r in self.rows for k in r if k != "epoch"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def plot_history(history_csv: str, out_png: str, title: str | None = None, keys=None) -> str:
    """Save the curves of a history CSV as a PNG: one panel per quantity, training and ``val_`` together.

    Args:
        history_csv: a file written by :class:`AtomicCSVLogger` (or any CSV with an ``epoch`` column).
        out_png: where to write the figure (written atomically).
        title: figure title; default the CSV's folder name.
        keys: the quantities to draw (without ``val_``), e.g. ``("loss", "dice")``; default all.
            Names missing from the CSV are skipped.

    Returns:
        ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = read_history_csv(history_csv)
    epochs = columns.pop("epoch")
    names = sorted({k[4:] if k.startswith("val_") else k for k in columns})
    names.sort(key=lambda n: (0 if n == "loss" else 1 if "loss" in n else 2, n))
    if keys is not None:
        names = [n for n in keys if n in names]
    if not names:
        raise ValueError(f"{history_csv}: no columns to plot besides 'epoch'")
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            if key in columns:
                ax.plot(epochs, columns[key], style, markersize=3, label="validation" if key != name else "training")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if "loss" in name and all(v > 0 for v in columns.get(name, []) if math.isfinite(v)):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title or os.path.basename(os.path.dirname(os.path.abspath(history_csv))))
    fig.tight_layout()
    try:
        atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=100, format="png"), ".png")
    finally:
        plt.close(fig)
    return out_png


class LossCurvePlotter(keras.callbacks.Callback):
    """Redraw the loss-curve PNG from the history CSV after every epoch (put it after the CSV logger).

    Args:
        history_csv: the CSV written by :class:`AtomicCSVLogger`.
        out_png: the figure to (re)write.
        every: redraw every this many epochs (the last epoch is always drawn).
        title: figure title (default: the CSV's folder name; pass the run's name when that
            folder is a temporary one).
        keys: quantities to draw (see :func:`plot_history`).
    """

    def __init__(self, history_csv: str, out_png: str, every: int = 1, title: str | None = None, keys=None):
        super().__init__()
        self.history_csv, self.out_png, self.every = str(history_csv), str(out_png), max(1, int(every))
        self.title, self.keys = title, None if keys is None else tuple(keys)
        self._drawn_from = None  # (mtime, size) of the CSV the PNG was last drawn from

    def _csv_state(self) -> tuple[int, int]:
        stat = os.stat(self.history_csv)
        return stat.st_mtime_ns, stat.st_size

    def _draw(self) -> None:
        plot_history(self.history_csv, self.out_png, title=self.title, keys=self.keys)
        self._drawn_from = self._csv_state()

    def on_epoch_end(self, epoch, logs=None):
        if _is_chief(self.model) and (epoch + 1) % self.every == 0 and os.path.exists(self.history_csv):
            self._draw()

    def on_train_end(self, logs=None):
        # The last state is always drawn, but not twice: after the last epoch's redraw (about 0.4 s
        # on 2 cores) there is nothing new to show.
        if _is_chief(self.model) and os.path.exists(self.history_csv):
            if self._drawn_from != self._csv_state() or not os.path.exists(self.out_png):
                self._draw()
