"""Small helpers every tutorial uses: command line, output folder, figures and the closing summary.

A tutorial is run as a plain script from anywhere::

    python tutorials/unet_segmentation.py --quick

and writes everything it makes under ``results/tutorials/<name>/``. At its end it calls
:func:`finish` with the numbers that show it worked (a final loss, an accuracy, a Dice score);
they are printed, saved to ``summary.json`` and checked against the tutorial's own expectations,
so the test suite can run every tutorial and know it still teaches what it says.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Tutorials live one folder below the repository root; make `models`, `data_utils` and `training`
# importable however the script is started (python tutorials/x.py, VS Code cells, Jupyter).
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter in teaching output


@dataclass
class Tutorial:
    """What a running tutorial needs to know.

    Attributes:
        name: the tutorial's file name without ``.py``.
        quick: True with ``--quick`` (a run of at most ~20 s on a laptop CPU, for tests and a first look).
        out_dir: folder for figures and the summary, ``results/tutorials/<name>/``.
        seed: the seed every random choice in the tutorial derives from.
    """

    name: str
    quick: bool
    out_dir: Path
    seed: int

    def pick(self, full, quick):
        """Return ``quick`` in ``--quick`` mode, else ``full`` (for the named constants at the top)."""
        return quick if self.quick else full

    def save_figure(self, fig, filename: str) -> Path:
        """Save a matplotlib figure as PNG in the tutorial's folder and close it.

        Args:
            fig: a ``matplotlib.figure.Figure``.
            filename: e.g. ``"loss_curves.png"``.

        Returns:
            The path written.
        """
        import matplotlib.pyplot as plt

        path = self.out_dir / filename
        tmp = path.with_name(path.stem + ".tmp.png")
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)  # never leave a half-written figure behind
        plt.close(fig)
        print(f"figure: {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
        return path

    def finish(self, results: dict[str, float], expect: dict[str, tuple[str, float]] | None = None) -> None:
        """Print the tutorial's key numbers, save them and check the expected learning outcome.

        Args:
            results: name -> number, e.g. ``{"test_accuracy": 0.93, "final_loss": 0.12}``.
            expect: name -> (``">="`` or ``"<="``, bar): what a correct run must reach. The bars are
                set with margin for the ``--quick`` run as well as the full one.

        Raises:
            SystemExit: with status 1 if an expectation is not met (so a broken tutorial fails its test).
        """
        checks = {}
        for key, (op, bar) in (expect or {}).items():
            value = float(results[key])
            checks[key] = {"op": op, "bar": bar, "value": value, "passed": value >= bar if op == ">=" else value <= bar}
        summary = {"tutorial": self.name, "quick": self.quick, "results": {k: float(v) for k, v in results.items()}, "checks": checks}
        path = self.out_dir / "summary.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, path)
        print("\nWhat this run measured:")
        for key, value in results.items():
            print(f"  {key:>24s} = {float(value):.4f}")
        failed = [f"{k} = {c['value']:.4f} (expected {c['op']} {c['bar']})" for k, c in checks.items() if not c["passed"]]
        if failed:
            print("Expected learning outcome NOT reached: " + "; ".join(failed))
            raise SystemExit(1)


def start(name: str, description: str, argv: list[str] | None = None) -> Tutorial:
    """Parse the tutorial's command line, seed everything and create its output folder.

    Args:
        name: the tutorial's file name without ``.py`` (use ``Path(__file__).stem``).
        description: one line for ``--help``.
        argv: arguments (default ``sys.argv[1:]``; in a notebook, unknown kernel arguments are ignored).

    Returns:
        A :class:`Tutorial`.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny run (~20 s on a laptop CPU) for tests and a first look")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "tutorials" / name, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice")
    args, _unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import keras

    keras.utils.set_random_seed(args.seed)
    return Tutorial(name=name, quick=args.quick, out_dir=args.out, seed=args.seed)
