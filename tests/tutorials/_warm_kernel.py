"""Jupyter kernels forked from a process that has already imported TensorFlow (test helper).

Starting a notebook kernel and importing TensorFlow and Keras in it costs 6-8 s of CPU each time
(about 5.5 s of a quick tutorial's 10-25 s on 2 idle cores). The tutorial tests run 25 notebooks, so each
pytest worker starts one *zygote* that imports the heavy third-party packages once, and every
kernel is a fork of it: a fresh process, started in the notebook's folder with the notebook's
environment, running the real ``ipykernel`` exactly as ``python -m ipykernel_launcher`` would.

Only packages outside the kit are preloaded (TensorFlow, Keras, NumPy, SciPy, ipykernel), so each
notebook still finds and imports the kit and ``tutorials/common.py`` itself, as in a classroom.
Matplotlib is not preloaded because its backend is chosen from the environment when it is imported
and the kernel sets the inline backend. Settings that TensorFlow or Keras read when imported
(:data:`IMPORT_TIME_VARIABLES`) must be the same for the zygote and the kernel, or the kernel is
refused with a message naming the variable.

Two roles, one file:

- ``python _warm_kernel.py serve SOCKET``: the zygote. Preloads, prints ``ready``, then forks one
  kernel per connection until its standard input closes.
- ``python _warm_kernel.py launch CONNECTION_FILE``: the kernel command in the kernel spec
  (what ``jupyter_client`` starts). It hands the connection file, its folder, environment and
  standard streams to the zygote, forwards SIGINT/SIGTERM to the forked kernel and exits with the
  kernel's status. If the launcher is killed, the zygote kills the kernel.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys

SOCKET_VARIABLE = "KIT_WARM_KERNEL_SOCKET"
IMPORT_TIME_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND", "KERAS_HOME",
                         "CUDA_VISIBLE_DEVICES", "XLA_FLAGS", "TF_XLA_FLAGS", "TF_USE_LEGACY_KERAS")
PRELOAD = ("numpy", "scipy", "tensorflow", "keras", "ipykernel.kernelapp")


def _settings(env) -> dict:
    return {name: env.get(name) for name in IMPORT_TIME_VARIABLES}


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """One newline-terminated JSON request and the three standard-stream descriptors sent with it."""
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 16)
        if not more:
            raise ConnectionError("launcher closed the connection mid-request")
        data += more
    return json.loads(data), fds


def _become_kernel(request: dict, fds: list[int], close: list[socket.socket]) -> None:
    """In the forked child: take the launcher's streams, folder and environment, then run ipykernel."""
    for sock in close:
        sock.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["ipykernel_launcher", *request["args"]]
    if "JPY_PARENT_PID" in os.environ:
        # ipykernel reads this when it is imported (in the zygote, before it was set); a plain
        # kernel then watches for its parent's death and does not print the "ipython kernel" note.
        sys.argv.append(f"--IPKernelApp.parent_handle={os.environ['JPY_PARENT_PID']}")
    status = 0
    try:
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # report like a kernel that crashed at start-up
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def serve(socket_path: str) -> None:
    """The zygote: preload, then fork a kernel per launcher connection until stdin closes."""
    import importlib

    # As `python -m ipykernel_launcher` has it: no script folder on the path (the kernel adds '').
    del sys.path[0]
    for name in PRELOAD:
        importlib.import_module(name)
    loaded_with = _settings(os.environ)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(socket_path):  # left by an earlier session whose process had this pid
        os.unlink(socket_path)
    server.bind(socket_path)
    server.listen()
    print("ready", flush=True)
    kernels: dict[socket.socket, int] = {}  # launcher connection -> kernel pid
    while True:
        readable, _, _ = select.select([sys.stdin, server, *kernels], [], [], 0.2)
        for conn, pid in list(kernels.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
                conn.close()
                del kernels[conn]
        if sys.stdin in readable and not sys.stdin.buffer.read1(1):
            break  # the test session is over
        if server in readable:
            conn, _ = server.accept()
            request, fds = _read_request(conn)
            differing = {k: (v, request["env"].get(k)) for k, v in loaded_with.items() if request["env"].get(k) != v}
            if differing:
                conn.sendall(f"refused: imported with other settings (zygote, kernel): {differing}\n".encode())
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:
                _become_kernel(request, fds, [server, conn, *kernels])
            for fd in fds:
                os.close(fd)
            conn.sendall(f"pid {pid}\n".encode())
            kernels[conn] = pid
        for conn in readable:
            if conn in kernels and not conn.recv(1):  # the launcher died: its kernel goes too
                os.kill(kernels[conn], signal.SIGKILL)
                os.waitpid(kernels.pop(conn), 0)
                conn.close()
    for pid in kernels.values():
        os.kill(pid, signal.SIGKILL)
    server.close()
    os.unlink(socket_path)


def launch(args: list[str]) -> int:
    """The kernel command: ask the zygote for a kernel, relay signals, return its exit status."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(os.environ[SOCKET_VARIABLE])
    request = {"args": args, "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
    reply = conn.makefile("r")
    first = reply.readline().split(maxsplit=1)
    if not first or first[0] != "pid":
        print(f"warm kernel: {' '.join(first) or 'the zygote closed the connection'}", file=sys.stderr)
        return 1
    pid = int(first[1])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
    last = reply.readline().split()  # "exit N" once the kernel has ended
    return int(last[1]) if len(last) == 2 and last[0] == "exit" else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2])
    elif sys.argv[1:2] == ["launch"]:
        sys.exit(launch(sys.argv[2:]))
    else:
        sys.exit("usage: _warm_kernel.py serve SOCKET | launch -f CONNECTION_FILE")
