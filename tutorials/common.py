"""What every tutorial shares: its settings, output folder, seeding, figures, progress and closing summary.

A tutorial is a ``.py`` file of ``# %%`` cells. It runs as a plain script from anywhere::

    python tutorials/unet_segmentation.py --quick [--seed 1] [--out DIR]

and, unchanged, as a notebook (jupytext conversion, or VS Code / Jupyter opening the cells) whose
kernel starts in ``tutorials/`` or in the repository root. Its first code cell sets ``QUICK`` and
finds this module (on a fresh machine or Colab it clones and installs the kit first), then calls::

    tut = common.start("unet_segmentation", "one line for --help", quick=QUICK)

Settings, lowest precedence first: the defaults of :class:`TutorialConfig`, a ``--config FILE``, the
environment (``TUTORIAL_QUICK=1``, ``TUTORIAL_OUT=DIR``, ``TUTORIAL_SEED=N``), the command line
(scripts only; a notebook kernel's own arguments are never parsed), and ``QUICK = True`` in the
first cell. Everything a tutorial writes goes under ``results/tutorials/<name>/`` (or the folder
chosen); nothing is written next to the sources. At its end the tutorial calls :meth:`Tutorial.finish`
with the numbers that show it worked and the bars they must reach; they are printed, saved to
``summary.json`` and checked, so the test suite knows every tutorial still teaches what it says.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

# Tutorials live one folder below the repository root; make `models`, `data_utils` and `training`
# importable however the tutorial is started (python tutorials/x.py, a kernel in tutorials/ or the root).
# This module is always imported (never run as a notebook cell), so its import spec names its file;
# the notebooks themselves must not rely on a file name, which a Jupyter kernel does not have.
REPO_ROOT = Path(__spec__.origin).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
# The kit's TensorFlow settings (quiet start-up, oneDNN) come with `training`: data_utils.environment.

from training import config as _config  # noqa: E402  (needs REPO_ROOT on the path)
from training.config import field  # noqa: E402

# Environment variables a notebook (or a test) uses instead of the command line, by config field.
ENV_VARS = {"quick": "TUTORIAL_QUICK", "out": "TUTORIAL_OUT", "seed": "TUTORIAL_SEED"}


@dataclasses.dataclass
class TutorialConfig:
    """The settings every tutorial takes (``--quick``, ``--seed``, ``--out``)."""

    quick: bool = field(False, "short run (<= 30 s on 2 CPU cores) for tests and a first look")
    seed: int = field(0, "seed for every random choice (run 0, 1 and 2 to see the spread)")
    out: str = field("", "output folder; empty means results/tutorials/<name>/")


class OutcomeNotReached(RuntimeError):
    """A tutorial's run missed one of its stated learning outcomes (see :meth:`Tutorial.finish`)."""


def in_notebook() -> bool:
    """True inside a Jupyter kernel (figures are then shown inline, and argv is the kernel's, not ours)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


@dataclasses.dataclass
class Tutorial:
    """What a running tutorial needs to know.

    Attributes:
        name: the tutorial's file name without ``.py``.
        quick: the short run (``--quick``, ``TUTORIAL_QUICK=1`` or ``QUICK = True``).
        out_dir: folder for figures, logs and the summary.
        seed: the seed every random choice in the tutorial derives from.
    """

    name: str
    quick: bool
    out_dir: Path
    seed: int

    def pick(self, full, quick):
        """Return ``quick`` in quick mode, else ``full`` (for the named constants at the top)."""
        return quick if self.quick else full

    def reseed(self, offset: int = 0) -> None:
        """Seed Python, NumPy, TensorFlow and Keras again (``seed + offset``) through the kit's ``set_seed``.

        Call it before building each model that should start from the same (or a known) initialisation.
        """
        from training.reproducibility import set_seed

        # Op determinism stays off: some kernels have no deterministic version and would raise on a GPU.
        set_seed(self.seed + offset, deterministic=False)

    def progress(self, label: str):
        """A Keras callback showing one progress bar per ``fit``, advancing an epoch at a time.

        Use it with ``fit(..., verbose=0, callbacks=[tut.progress("adam")])``: a tutorial that trains
        many small models shows one line each (label, epochs done, latest loss and metrics) instead
        of a line per epoch. For a single long ``fit``, Keras' own ``verbose=1`` (a bar per epoch) or
        ``verbose=2`` (a line per epoch) shows more.

        Args:
            label: printed in front of the bar, e.g. the optimiser's name.
        """
        import keras

        from training.trainer_base import build_optimizers

        class EpochProgress(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                build_optimizers(self.model)  # see tensorboard(): the first step is then traced once
                print(label)
                # stateless_metrics=(): show each epoch's own loss, not a running mean over epochs.
                self.bar = keras.utils.Progbar(self.params["epochs"], unit_name="epoch", stateless_metrics=())

            def on_epoch_end(self, epoch, logs=None):
                self.bar.update(epoch + 1, values=[(k, float(v)) for k, v in (logs or {}).items()])

        return EpochProgress()

    def tensorboard(self, run: str):
        """A ``keras.callbacks.TensorBoard`` writing to ``<out_dir>/logs/<run>`` (``tensorboard --logdir`` it).

        Args:
            run: a short name for this training run, e.g. ``"unet2d"``.
        """
        import keras

        from training.trainer_base import build_optimizers

        class TensorBoard(keras.callbacks.TensorBoard):
            def on_train_begin(self, logs=None):
                # Create the optimiser's variables before the first step: created inside it, they
                # make TensorFlow trace the step twice (measured: recurrent_networks' quick run 52 s -> 45 s).
                build_optimizers(self.model)
                super().on_train_begin(logs)

        return TensorBoard(log_dir=str(self.out_dir / "logs" / run), write_graph=False)

    def save_figure(self, fig, filename: str) -> Path:
        """Save a matplotlib figure as PNG in the output folder, show it inline in a notebook, close it.

        Args:
            fig: a ``matplotlib.figure.Figure``.
            filename: e.g. ``"loss_curves.png"``.

        Returns:
            The path written.
        """
        import matplotlib.pyplot as plt

        from data_utils.io import atomic_write

        path = atomic_write(self.out_dir / filename, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        plt.close(fig)
        if in_notebook():
            # The saved PNG itself, so the notebook shows exactly the file, whatever matplotlib backend is active.
            from IPython.display import Image, display

            display(Image(data=path.read_bytes(), format="png"))
        print(f"figure: {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
        return path

    def finish(self, results: dict[str, float], expect: dict[str, tuple[str, float]] | None = None) -> dict:
        """Print the tutorial's key numbers, save them to ``summary.json`` and check the expected outcome.

        Args:
            results: name -> number, e.g. ``{"test_accuracy": 0.93, "final_loss": 0.12}``.
            expect: name -> (``">="`` or ``"<="``, bar): what a correct run must reach, quick and full.

        Returns:
            The summary written: ``{"tutorial", "quick", "seed", "results", "checks"}``.

        Raises:
            KeyError: an expectation names a result that is not in ``results``.
            ValueError: an expectation's operator is not ``">="`` or ``"<="``.
            OutcomeNotReached: a bar is missed (a script then exits with status 1, a notebook stops).
        """
        from data_utils.io import atomic_write

        checks = {}
        for key, (op, bar) in (expect or {}).items():
            if key not in results:
                raise KeyError(f"finish(): expectation {key!r} is not among the results ({', '.join(results)})")
            if op not in (">=", "<="):
                raise ValueError(f"finish(): expectation {key!r} has operator {op!r}; expected '>=' or '<='")
            value = float(results[key])
            checks[key] = {"op": op, "bar": bar, "value": value, "passed": value >= bar if op == ">=" else value <= bar}
        summary = {"tutorial": self.name, "quick": self.quick, "seed": self.seed,
                   "results": {k: float(v) for k, v in results.items()}, "checks": checks}
        text = json.dumps(summary, indent=2)
        atomic_write(self.out_dir / "summary.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print("\nWhat this run measured:")
        for key, value in results.items():
            print(f"  {key:>28s} = {float(value):.4f}")
        failed = [f"{k} = {c['value']:.4f} (expected {c['op']} {c['bar']})" for k, c in checks.items() if not c["passed"]]
        if failed:
            raise OutcomeNotReached("expected learning outcome NOT reached: " + "; ".join(failed))
        return summary


def _from_environment() -> dict[str, str]:
    return {name: os.environ[var] for name, var in ENV_VARS.items() if os.environ.get(var, "") != ""}


def start(name: str, description: str, quick: bool = False, argv: list[str] | None = None) -> Tutorial:
    """Resolve the tutorial's settings, seed everything and create its output folder.

    Args:
        name: the tutorial's file name without ``.py``.
        description: one line for ``--help``.
        quick: the notebook's ``QUICK`` constant; True forces the short run.
        argv: command-line arguments (default: ``sys.argv[1:]`` in a script, none in a notebook).

    Returns:
        A :class:`Tutorial`.

    Raises:
        training.config.ConfigError: a bad value in the environment (the message names the variable).
        SystemExit: a bad command-line option (argparse's message, status 2).
    """
    import argparse

    parser = argparse.ArgumentParser(prog=f"python tutorials/{name}.py", description=description)
    _config.add_arguments(parser, TutorialConfig)
    if argv is None:
        argv = [] if in_notebook() else sys.argv[1:]
    namespace = parser.parse_args(argv)
    # Precedence, lowest first: defaults, --config FILE, the environment, the command line (then QUICK).
    base = _config.load_config(TutorialConfig, namespace.config) if namespace.config else TutorialConfig()
    env = _from_environment()
    source = "environment (" + ", ".join(ENV_VARS[k] for k in env) + ")"
    base = _config.from_dict(TutorialConfig, env, source=source, base=base)
    names = {f.name for f in dataclasses.fields(TutorialConfig)}
    try:
        cfg = _config.from_dict(TutorialConfig, {k: v for k, v in vars(namespace).items() if k in names},
                                source="command line", base=base)
    except _config.ConfigError as err:
        parser.error(str(err))
    cfg.quick = cfg.quick or bool(quick)
    out_dir = Path(cfg.out).expanduser().resolve() if cfg.out else REPO_ROOT / "results" / "tutorials" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    tut = Tutorial(name=name, quick=cfg.quick, out_dir=out_dir, seed=cfg.seed)
    tut.reseed()
    print(f"{name}: {'quick' if tut.quick else 'full'} run, seed {tut.seed}, output in {out_dir}")
    return tut
