"""Every tutorial, executed once as a notebook in quick mode: it runs top to bottom, shows and saves its
figures and reaches every learning outcome it states.

Each ``tutorials/<name>.py`` is converted with jupytext and run by a fresh Jupyter kernel, as a
lecturer's notebook would be (forked from a process that has imported TensorFlow already, to save
about 5.5 s per notebook on 2 cores: ``conftest.py``; ``KIT_COLD_KERNELS=1`` starts plain kernels). The
kernel starts alternately in ``tutorials/`` and in the repository root (both must work), quick mode
comes from ``TUTORIAL_QUICK=1`` and the output folder from ``TUTORIAL_OUT``. Each tutorial states its expected outcome through ``Tutorial.finish(results,
expect=...)``; a missed bar raises in the last cell, so this test fails if a tutorial stops teaching
what it claims. ``python tutorials/<name>.py --quick`` runs the same cells as a script; the command line
itself is tested in ``test_common.py`` (each tutorial runs once in the suite, not twice).
"""

import json
import os
import time
from pathlib import Path

import pytest

from .conftest import notebook_environment

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
def test_tutorial_runs_as_notebook(index: int, script: Path, tmp_path: Path, kernel_manager):
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
    env = notebook_environment(TUTORIAL_QUICK="1", TUTORIAL_OUT=str(out))
    client = nbclient.NotebookClient(nb, km=kernel_manager(), timeout=CELL_TIMEOUT_S, kernel_name="python3",
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


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_warm_kernels_refuse_other_import_settings_and_die_with_their_launcher(kernel_manager):
    """A forked kernel runs code with TensorFlow already imported, is refused when TensorFlow would
    have been imported with other settings, and does not outlive the process jupyter_client started."""
    if kernel_manager() is None:
        pytest.skip("KIT_COLD_KERNELS=1: plain kernels")
    refused = kernel_manager()
    refused.start_kernel(env=notebook_environment(TF_ENABLE_ONEDNN_OPTS="0"))
    try:
        assert refused.provisioner.process.wait(timeout=60) == 1
    finally:
        refused.cleanup_resources()

    km = kernel_manager()
    km.start_kernel(env=notebook_environment(TUTORIAL_QUICK="1"))
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        printed = []
        client.execute_interactive(
            "import os, sys; print(os.getpid(), 'tensorflow' in sys.modules, os.environ['TUTORIAL_QUICK'], '' in sys.path)",
            timeout=60, output_hook=lambda msg: printed.append(msg["content"].get("text", "")))
        pid, preloaded, quick, cwd_on_path = "".join(printed).split()
        # As in a plain kernel: the environment given and the notebook's folder ('') on the path.
        assert (preloaded, quick, cwd_on_path) == ("True", "1", "True")
        launcher = km.provisioner.process
        launcher.kill()  # as jupyter_client does when a kernel will not shut down
        assert _gone(int(pid), within_s=10), "the forked kernel outlived its launcher"
    finally:
        client.stop_channels()
        km.cleanup_resources()
