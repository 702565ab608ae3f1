"""The notebook kernels for the tutorial tests: forked from a warm zygote (``_warm_kernel.py``).

``KIT_COLD_KERNELS=1`` starts every notebook in a plain ``python3`` kernel instead (what a classroom
Jupyter does; each then imports TensorFlow itself, about 5.5 s more per notebook on 2 idle cores).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._warm_kernel import SOCKET_VARIABLE

HELPER = Path(__file__).with_name("_warm_kernel.py")
KERNEL_NAME = "kit-warm-python3"


def notebook_environment(**extra: str) -> dict[str, str]:
    """The environment a tutorial notebook's kernel runs in (the zygote is started with the same)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as in a classroom
    return env


@pytest.fixture(scope="session")
def kernel_manager(tmp_path_factory):
    """A factory of ``jupyter_client`` kernel managers for ``nbclient`` (None: nbclient's own python3)."""
    if os.environ.get("KIT_COLD_KERNELS") == "1" or not hasattr(os, "fork"):
        yield lambda: None
        return
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    folder = tmp_path_factory.mktemp("warm-kernel")
    spec_dir = folder / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    # A short path: AF_UNIX socket paths are limited to ~100 characters.
    socket_path = f"/tmp/kit-zygote-{os.getpid()}.sock"
    spec = {"argv": [sys.executable, str(HELPER), "launch", "-f", "{connection_file}"],
            "display_name": "Python 3 (forked from a warm zygote)", "language": "python",
            "env": {SOCKET_VARIABLE: socket_path}, "interrupt_mode": "signal"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    zygote = subprocess.Popen([sys.executable, str(HELPER), "serve", socket_path], env=notebook_environment(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = zygote.stdout.readline().strip()
        assert ready == "ready", f"the warm kernel zygote did not start (said {ready!r}, exit {zygote.poll()})"
        specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])

        yield lambda: KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
    finally:
        zygote.stdin.close()  # the zygote's signal to stop (it kills any kernel left)
        try:
            zygote.wait(timeout=30)
        except subprocess.TimeoutExpired:
            zygote.kill()
