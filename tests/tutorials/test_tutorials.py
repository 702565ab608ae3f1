"""Every tutorial, executed once as a notebook in quick mode: it runs top to bottom, shows and saves its
figures and reaches every learning outcome it states.

Each ``tutorials/<name>.py`` is converted with jupytext and run by a fresh Jupyter kernel, as a
lecturer's notebook would be. The kernel starts alternately in ``tutorials/`` and in the repository
root (both must work), quick mode comes from ``TUTORIAL_QUICK=1`` and the output folder from
``TUTORIAL_OUT``. Each tutorial states its expected outcome through ``Tutorial.finish(results,
expect=...)``; a missed bar raises in the last cell, so this test fails if a tutorial stops teaching
what it claims. ``python tutorials/<name>.py --quick`` runs the same cells as a script; the command line
itself is tested in ``test_common.py`` (each tutorial runs once in the suite, not twice).
"""

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = sorted(p for p in (REPO_ROOT / "tutorials").glob("*.py") if p.stem != "common" and not p.stem.startswith("_"))
CELL_TIMEOUT_S = 300  # quick runs take <= 30 s on 2 idle cores; a loaded CI machine gets generous margin


def test_there_are_tutorials():
    assert TUTORIALS, "no tutorials found in tutorials/"


def _notebook_errors(nb) -> str:
    """The tracebacks in a notebook's outputs, as text (empty if none)."""
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    return "\n".join(f"{o.ename}: {o.evalue}" for o in errors)


def _stream_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.output_type == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("index,script", list(enumerate(TUTORIALS)), ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_as_notebook(index: int, script: Path, tmp_path: Path):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")

    nb = jupytext.read(script)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), \
        f"{script.name}: the first cell must be a markdown title and introduction"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "QUICK =" in code[0].source, f"{script.name}: the first code cell must set QUICK (and prepare a fresh machine)"
    assert not any("__file__" in c.source for c in code), f"{script.name}: __file__ is undefined in a notebook"

    kernel_dir = REPO_ROOT / "tutorials" if index % 2 == 0 else REPO_ROOT
    out = tmp_path / "out"
    env = {**os.environ, "TUTORIAL_QUICK": "1", "TUTORIAL_OUT": str(out), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as in a classroom
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(kernel_dir)}})
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{script.name} failed as a notebook (kernel in {kernel_dir}):\n{str(err)[-4000:]}")
    assert not _notebook_errors(nb), _notebook_errors(nb)

    saved = sorted(p.name for p in out.glob("*.png"))
    assert saved, f"{script.name} saved no PNG figure"
    inline = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []) if o.output_type == "display_data")
    assert inline >= len(saved), f"{script.name}: {len(saved)} figures saved but {inline} shown inline"
    assert "quick run" in _stream_text(nb), f"{script.name} did not start in quick mode"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quick"] is True
    assert summary["checks"], f"{script.name} states no expected learning outcome"
    failed = {k: c for k, c in summary["checks"].items() if not c["passed"]}
    assert not failed, f"{script.name} missed its stated outcomes: {failed}"
    assert not list(REPO_ROOT.joinpath("tutorials").glob("*.png")), "a tutorial wrote into the source tree"
