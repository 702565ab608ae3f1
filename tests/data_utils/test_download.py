"""Tests for data_utils.download: verified, resumable downloads and atomic extraction, offline.

Every test downloads from a ``file://`` URL or from an HTTP server on 127.0.0.1 run in a thread
by the test itself (it stops at the end of the test); nothing touches the internet.
"""

import hashlib
import http.server
import io as bytes_io
import json
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from data_utils import download, io, layouts
from data_utils.download import DatasetSource, DownloadError

PAYLOAD = bytes(range(256)) * 400  # 100 kB


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the server's ``files`` dict; honours Range; can cut a response short."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and server.honour_range:
            start = int(range_header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:
            self.wfile.write(body[: server.cut_after])
            server.cut_after = None  # only the first response is cut
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 (a free port) in a daemon thread, shut down after the test."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.honour_range, httpd.cut_after = {}, [], True, None
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_file_url_download_verifies_sha256(tmp_path):
    source = tmp_path / "remote.bin"
    source.write_bytes(PAYLOAD)
    out = download.download_file(source.as_uri(), tmp_path / "got" / "file.bin", sha256=_sha256(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD
    assert sorted(p.name for p in out.parent.iterdir()) == ["file.bin"]  # no .part left
    # Already there and verified: nothing is read from the URL again.
    source.unlink()
    assert download.download_file(source.as_uri(), out, sha256=_sha256(PAYLOAD), progress=False) == out


def test_checksum_mismatch_leaves_nothing_under_the_final_name(tmp_path):
    source = tmp_path / "remote.bin"
    source.write_bytes(PAYLOAD)
    target = tmp_path / "got" / "file.bin"
    with pytest.raises(DownloadError, match=r"sha256 .* expected 0000"):
        download.download_file(source.as_uri(), target, sha256="0" * 64, progress=False)
    assert not target.exists() and not list(target.parent.glob("*"))
    with pytest.raises(DownloadError, match="md5"):
        download.download_file(source.as_uri(), target, md5="0" * 32, progress=False)
    assert download.download_file(source.as_uri(), target, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False).is_file()


def test_a_download_needs_a_checksum(tmp_path):
    with pytest.raises(ValueError, match="no sha256 or md5"):
        download.download_file("file:///nowhere", tmp_path / "x")
    (tmp_path / "remote").write_bytes(b"abc")
    assert download.download_file((tmp_path / "remote").as_uri(), tmp_path / "x", allow_unverified=True, progress=False).read_bytes() == b"abc"


def test_http_download_with_progress(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    seen = []
    out = download.download_file(f"{server.url}/data.bin", tmp_path / "data.bin", sha256=_sha256(PAYLOAD),
                                 progress=lambda done, total: seen.append((done, total)))
    assert out.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    with pytest.raises(DownloadError, match="404"):
        download.download_file(f"{server.url}/missing.bin", tmp_path / "m.bin", sha256="0" * 64, progress=False, timeout=5)
    assert not (tmp_path / "m.bin").exists()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    server.files["/big.bin"] = PAYLOAD
    server.cut_after = 30_000
    target = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match="resum"):
        download.download_file(f"{server.url}/big.bin", target, sha256=_sha256(PAYLOAD), progress=False, timeout=5)
    part = tmp_path / "big.bin.part"
    assert not target.exists() and part.stat().st_size == 30_000
    out = download.download_file(f"{server.url}/big.bin", target, sha256=_sha256(PAYLOAD), progress=False, timeout=5)
    assert out.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1] == ("/big.bin", "bytes=30000-")


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/big.bin"] = PAYLOAD
    server.honour_range = False
    (tmp_path / "big.bin.part").write_bytes(b"garbage that is not a prefix")
    out = download.download_file(f"{server.url}/big.bin", tmp_path / "big.bin", sha256=_sha256(PAYLOAD), progress=False, timeout=5)
    assert out.read_bytes() == PAYLOAD


def _decathlon_tar(tmp_path, compression="gz") -> bytes:
    """A tiny Decathlon task packed like the real archive (one top-level folder, macOS ._ files)."""
    task = tmp_path / "build" / "Task05_Prostate"
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    training = []
    for i in range(3):
        io.save_nifti(np.random.default_rng(i).random((6, 5, 4, 2)).astype(np.float32), affine, task / "imagesTr" / f"prostate_{i:02d}.nii.gz")
        io.save_nifti(np.zeros((6, 5, 4), np.uint8), affine, task / "labelsTr" / f"prostate_{i:02d}.nii.gz")
        training.append({"image": f"./imagesTr/prostate_{i:02d}.nii.gz", "label": f"./labelsTr/prostate_{i:02d}.nii.gz"})
    (task / "dataset.json").write_text(json.dumps({"name": "PROSTATE", "modality": {"0": "T2", "1": "ADC"},
                                                   "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "training": training, "test": []}))
    buffer = bytes_io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tf:
        tf.add(task, arcname="Task05_Prostate")
        info = tarfile.TarInfo("._Task05_Prostate")
        info.size = 4
        tf.addfile(info, bytes_io.BytesIO(b"\x00\x05\x16\x07"))
    return buffer.getvalue()


def test_fetch_decathlon_archive_through_the_registry(server, tmp_path, monkeypatch):
    archive = _decathlon_tar(tmp_path)
    server.files["/Task05_Prostate.tar"] = archive
    monkeypatch.setattr(download, "REGISTRY", dict(download.REGISTRY))
    download.register(DatasetSource(name="msd_prostate", url=f"{server.url}/Task05_Prostate.tar", sha256=_sha256(archive),
                                    archive="tar", folder="Task05_Prostate", layout="decathlon"), overwrite=True)
    root = tmp_path / "data"
    task = download.load_dataset("msd_prostate", root, progress=False, timeout=5)
    assert isinstance(task, layouts.DecathlonTask) and len(task.training) == 3
    assert task.root == root / "Task05_Prostate"
    assert sorted(p.name for p in root.iterdir()) == [".downloads", "Task05_Prostate"]  # no staging folder left
    assert not list((root / ".downloads").iterdir())  # the archive is removed after extraction
    requests = len(server.requests)
    assert download.fetch("msd_prostate", root) == root / "Task05_Prostate"  # already there: no request
    assert len(server.requests) == requests


def test_fetch_single_file_dataset(tmp_path, monkeypatch):
    arrays = {f"{s}_{k}": np.zeros((2, 4, 4) if k == "images" else (2, 1), np.uint8) for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(tmp_path / "tiny.npz", **arrays)
    data = (tmp_path / "tiny.npz").read_bytes()
    monkeypatch.setattr(download, "REGISTRY", {})
    download.register(DatasetSource(name="tiny", url=(tmp_path / "tiny.npz").as_uri(), sha256=_sha256(data), archive="file", layout="npz"))
    loaded = download.load_dataset("tiny", tmp_path / "data", progress=False)
    assert loaded["train"]["image"].shape == (2, 4, 4, 1)
    assert (tmp_path / "data" / "tiny.npz").is_file()


def test_extraction_is_atomic_and_safe(tmp_path):
    # A zip whose member escapes the folder: refused, and nothing is left behind.
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("data/ok.txt", "fine")
        zf.writestr("../escaped.txt", "bad")
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match="outside the target folder"):
        download.extract_archive(evil, root, "data", kind="zip")
    assert list(root.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()
    # A corrupt archive: an error naming it, and no half-extracted folder.
    (tmp_path / "broken.tar").write_bytes(_decathlon_tar(tmp_path, "gz")[:500])
    with pytest.raises(DownloadError, match="broken.tar"):
        download.extract_archive(tmp_path / "broken.tar", root, "Task05_Prostate")
    assert list(root.iterdir()) == []
    # A zip with several top-level entries ends up inside the named folder.
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as zf:
        zf.writestr("a.txt", "a")
        zf.writestr("b/c.txt", "c")
    out = download.extract_archive(flat, root, "flat", kind="zip")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.txt")) == ["a.txt", "b/c.txt"]


def test_registry_entries_are_well_formed():
    for name, source in download.REGISTRY.items():
        assert source.name == name
        assert source.url.startswith("https://")
        assert source.sha256 or source.md5  # every shipped entry can be verified
    assert download.get_source("msd_prostate").folder == "Task05_Prostate"
    assert download.get_source("pneumoniamnist").file_name == "pneumoniamnist.npz"
    with pytest.raises(KeyError, match="unknown dataset"):
        download.get_source("nope")
    with pytest.raises(ValueError, match="64 hex digits"):
        DatasetSource(name="x", url="https://x/y.tar", sha256="abc")
    with pytest.raises(ValueError, match="archive"):
        DatasetSource(name="x", url="https://x/y.tar", archive="rar")
    with pytest.raises(ValueError, match="already registered"):
        download.register(download.get_source("msd_prostate"))


def test_command_line_prints_sha256(tmp_path, capsys):
    (tmp_path / "f").write_bytes(PAYLOAD)
    download.main(["sha256", str(tmp_path / "f")])
    assert capsys.readouterr().out.strip() == _sha256(PAYLOAD)
    download.main(["list"])
    assert "msd_prostate" in capsys.readouterr().out
