"""Verified downloads of the real public datasets the course uses, with a registry and atomic extraction.

``fetch("msd_prostate", root="data")`` downloads the archive, checks its checksum, extracts it
into a temporary folder next to the destination and renames that folder into place, so
``data/Task05_Prostate`` either exists complete or not at all. An interrupted download is kept
as ``<file>.part`` and resumed next time (HTTP ``Range``); a file never appears under its final name
before its checksum has been verified. Nothing downloads at import time or in the tests.

The registry (:data:`REGISTRY`) maps a name to a :class:`DatasetSource`: URL, checksum, archive type,
the folder the archive unpacks to and the layout adapter that reads it
(:func:`load_dataset`: ``"decathlon"`` -> :func:`data_utils.layouts.read_decathlon`,
``"npz"`` -> :func:`data_utils.formats.load_npz`).

**Checksums.** The entries shipped here carry the MD5 sums published by the datasets' own tooling
(MONAI's ``DecathlonDataset`` for the Decathlon archives, the ``medmnist`` package's ``INFO`` for
MedMNIST); their SHA-256 is left empty because it was not published next to the files. A lecturer
who has downloaded and checked a file can pin its SHA-256 (``python -m data_utils.download sha256
FILE`` prints it) with :func:`register`, or add a new dataset the same way::

    from data_utils import download
    download.register(download.DatasetSource(
        name="my_course_data", url="https://example.org/course_data.tar.gz",
        sha256="<64 hex digits>", archive="tar", folder="course_data", layout="folder"))

Downloads without any checksum are refused unless ``allow_unverified=True``.

Why not ``keras.utils.get_file`` (Keras 3.15) or pooch: ``get_file`` writes to the final name before
the hash check, deletes a partial file instead of resuming it and extracts in place; pooch has no
``Range`` resume either and would be one more dependency, so neither removes code without losing a
guarantee above.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

ARCHIVE_TYPES = ("tar", "zip", "file")
LAYOUTS = ("decathlon", "npz", "folder")
DOWNLOAD_DIR = ".downloads"
CHUNK_SIZE = 1 << 20


class DownloadError(RuntimeError):
    """A download failed, was incomplete, or did not match its checksum."""


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from and how to check and unpack it.

    Attributes:
        name: registry key, e.g. ``"msd_prostate"``.
        url: ``https://``, ``http://`` or ``file://`` URL of the file.
        sha256: expected SHA-256 (hex) of the downloaded file, or None.
        md5: expected MD5 (hex), for sources that only publish MD5; SHA-256 wins when both are given.
        archive: ``"tar"`` (any compression), ``"zip"`` or ``"file"`` (use the file as it is).
        folder: name of the folder the archive unpacks to (its single top-level folder), created
            under the root; for ``"file"``, the file's name under the root.
        layout: adapter for :func:`load_dataset`: ``"decathlon"``, ``"npz"`` or ``"folder"``.
        description: one line for people: what it is, size, licence.
    """

    name: str
    url: str
    sha256: str | None = None
    md5: str | None = None
    archive: str = "tar"
    folder: str | None = None
    layout: str = "folder"
    description: str = ""

    def __post_init__(self):
        if self.archive not in ARCHIVE_TYPES:
            raise ValueError(f"{self.name}: `archive` must be one of {ARCHIVE_TYPES}, got {self.archive!r}.")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: `layout` must be one of {LAYOUTS}, got {self.layout!r}.")
        for field, length in (("sha256", 64), ("md5", 32)):
            value = getattr(self, field)
            if value is not None and (len(value) != length or any(c not in "0123456789abcdef" for c in value.lower())):
                raise ValueError(f"{self.name}: `{field}` must be {length} hex digits, got {value!r}.")

    @property
    def file_name(self) -> str:
        """The downloaded file's name: the last part of the URL path."""
        return PurePosixPath(urllib.request.urlparse(self.url).path).name or f"{self.name}.download"

    @property
    def target_name(self) -> str:
        return self.folder or (self.file_name if self.archive == "file" else self.name)


def _msd(task: str, md5: str, description: str) -> DatasetSource:
    return DatasetSource(
        name=f"msd_{task.split('_', 1)[1].lower()}",
        url=f"https://msd-for-monai.s3-us-west-2.amazonaws.com/{task}.tar",
        md5=md5, archive="tar", folder=task, layout="decathlon",
        description=f"Medical Segmentation Decathlon {task}: {description} (CC BY-SA 4.0, medicaldecathlon.com).",
    )


# URLs and MD5 sums as published by MONAI (monai.apps.DecathlonDataset) and MedMNIST (medmnist.INFO).
REGISTRY: dict[str, DatasetSource] = {
    source.name: source
    for source in (
        _msd("Task05_Prostate", "35138f08b1efaef89d7424d2bcc928db",
             "32 labelled prostate MR (T2 + ADC), peripheral and transition zones, 229 MB"),
        _msd("Task04_Hippocampus", "9d24dba78a72977dbd1d2e110310f31b",
             "260 labelled hippocampus MR crops, anterior and posterior, 27 MB"),
        _msd("Task09_Spleen", "410d4a301da4e5b2f6f86ec3ddba524e", "41 labelled spleen CT, 1.5 GB"),
        _msd("Task02_Heart", "06ee59366e1e5124267b774dbd654057", "20 labelled left atrium MR, 435 MB"),
        DatasetSource(
            name="pneumoniamnist",
            url="https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1",
            md5="28209eda62fecd6e6a2d98b1501bb15f", archive="file", folder="pneumoniamnist.npz", layout="npz",
            description="MedMNIST PneumoniaMNIST: 5,856 chest X-rays 28x28, normal vs pneumonia, 4 MB (CC BY 4.0).",
        ),
    )
}


def register(source: DatasetSource, overwrite: bool = False) -> DatasetSource:
    """Add a dataset to :data:`REGISTRY` (or replace one with ``overwrite=True``, e.g. to pin a SHA-256)."""
    if source.name in REGISTRY and not overwrite:
        raise ValueError(f"dataset {source.name!r} is already registered; pass overwrite=True to replace it.")
    REGISTRY[source.name] = source
    return source


def get_source(name: str) -> DatasetSource:
    """The registered :class:`DatasetSource` called ``name``."""
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; registered: {sorted(REGISTRY)}.")
    return REGISTRY[name]


# --------------------------------------------------------------------------------------------
# Checksums and downloads
# --------------------------------------------------------------------------------------------


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (``algorithm``: ``"sha256"`` or ``"md5"``)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(path: Path, sha256: str | None, md5: str | None, url: str) -> None:
    algorithm, expected = ("sha256", sha256) if sha256 else ("md5", md5)
    if expected is None:
        return
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise DownloadError(
            f"{url}: {algorithm} of the downloaded file is {actual}, expected {expected}. The file is "
            "corrupt or was changed upstream; it was deleted. Try again, or check the registry entry."
        )


def _print_progress(done: int, total: int | None) -> None:
    text = f"{done / 2**20:8.1f} MB" + (f" of {total / 2**20:.1f} MB ({100 * done / total:5.1f} %)" if total else "")
    print(f"\r  downloaded {text}", end="", file=sys.stderr, flush=True)


def download_file(
    url: str,
    path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    allow_unverified: bool = False,
    resume: bool = True,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | bool = True,
) -> Path:
    """Download ``url`` to ``path`` and verify it; the file appears under ``path`` only when verified.

    Bytes go to ``<path>.part`` first. If the transfer breaks, the part file stays and the next
    call asks the server for the rest (``Range`` request; a server that ignores it sends the whole
    file again, which is handled). A complete file whose checksum does not match is deleted.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        path: destination file.
        sha256, md5: expected checksum (at least one, unless ``allow_unverified``).
        allow_unverified: download without a checksum (not recommended).
        resume: continue from an existing ``.part`` file.
        timeout: socket timeout in seconds.
        progress: True prints progress to stderr; a callable gets ``(bytes_done, total_or_None)``.

    Returns:
        ``path``. If it already exists with the right checksum, nothing is downloaded.

    Raises:
        DownloadError: network failure (the part file is kept for resuming), checksum mismatch.
        ValueError: no checksum and not ``allow_unverified``.
    """
    path = Path(path)
    if sha256 is None and md5 is None and not allow_unverified:
        raise ValueError(f"{url}: no sha256 or md5 to verify the download against; pass one (or allow_unverified=True).")
    if path.is_file():
        try:
            _check_digest(path, sha256, md5, url)
            return path
        except DownloadError:
            path.unlink()  # stale or corrupt: fetch again
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    report = _print_progress if progress is True else (progress or None)
    offset = part.stat().st_size if resume and part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "medimg-dl-kit"})
    if offset and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", None)
            if offset and status != 206:
                offset = 0  # the server sent the whole file: start again
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            done = offset
            with open(part, "ab" if offset else "wb") as stream:
                while chunk := response.read(CHUNK_SIZE):
                    stream.write(chunk)
                    done += len(chunk)
                    if report:
                        report(done, total)
        if total is not None and done != total:
            raise DownloadError(f"{url}: connection closed after {done} of {total} bytes; run again to resume.")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        if isinstance(error, urllib.error.HTTPError) and error.code == 416:
            part.unlink(missing_ok=True)  # our part file is longer than the remote file: it is not a prefix of it
        raise DownloadError(f"{url}: download failed ({error}); partial data kept in {part} for resuming.") from None
    except DownloadError:
        raise
    finally:
        if report is _print_progress:
            print(file=sys.stderr)
    try:
        _check_digest(part, sha256, md5, url)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, path)
    return path


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def _safe_member(name: str, archive: Path) -> None:
    """Refuse absolute paths and ``..``: an archive must not write outside its folder."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts:
        raise DownloadError(f"{archive}: refuses to extract member {name!r} (it would be written outside the target folder).")


def _extract_to(archive: Path, kind: str, destination: Path) -> None:
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                _safe_member(name, archive)
            zf.extractall(destination)
        return
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            _safe_member(member.name, archive)
            if member.issym() or member.islnk():
                _safe_member(str(PurePosixPath(member.name).parent / member.linkname), archive)
        if hasattr(tarfile, "data_filter"):
            tf.extractall(destination, filter="data")
        else:  # Python < 3.11.4: members were checked above
            tf.extractall(destination)


def extract_archive(archive, root, folder: str, kind: str = "tar") -> Path:
    """Extract an archive so that ``root/folder`` appears complete, in one rename, or not at all.

    The archive is unpacked into a temporary folder inside ``root``; then its single top-level
    folder (or, if it has several entries, all of them) is renamed to ``root/folder``.

    Args:
        archive: ``.tar`` (any compression) or ``.zip`` file.
        root: folder to extract into.
        folder: name of the resulting folder under ``root``.
        kind: ``"tar"`` or ``"zip"``.

    Returns:
        ``root/folder``.

    Raises:
        DownloadError: unreadable archive, or a member that would land outside the folder.
    """
    archive, root = Path(archive), Path(root)
    target = root / folder
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.extracting-", dir=root))
    try:
        try:
            _extract_to(archive, kind, staging)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
            raise DownloadError(f"{archive}: cannot extract ({error}).") from None
        # macOS adds "._*" and "__MACOSX" entries; they are not part of the data's top level.
        entries = [p for p in staging.iterdir() if not p.name.startswith("._") and p.name != "__MACOSX"]
        source = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# Registry front end
# --------------------------------------------------------------------------------------------


def fetch(name: str, root="data", *, allow_unverified: bool = False, keep_archive: bool = False,
          progress: Callable[[int, int | None], None] | bool = True, timeout: float = 60.0) -> Path:
    """Download (if needed), verify and unpack a registered dataset; return where it is.

    Args:
        name: registry key (see :data:`REGISTRY`).
        root: data folder; archives go to ``root/.downloads`` while they are fetched.
        allow_unverified: accept a registry entry without a checksum.
        keep_archive: keep the downloaded archive after extraction (default: delete it).
        progress, timeout: see :func:`download_file`.

    Returns:
        ``root/<folder>``: the extracted folder, or the file for ``archive="file"`` datasets.
        If it already exists, nothing is downloaded.
    """
    source = get_source(name)
    root = Path(root)
    target = root / source.target_name
    if target.exists():
        return target
    if source.archive == "file":
        return download_file(source.url, target, sha256=source.sha256, md5=source.md5,
                             allow_unverified=allow_unverified, progress=progress, timeout=timeout)
    archive = download_file(source.url, root / DOWNLOAD_DIR / source.file_name, sha256=source.sha256, md5=source.md5,
                            allow_unverified=allow_unverified, progress=progress, timeout=timeout)
    extract_archive(archive, root, source.target_name, source.archive)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return target


def load_dataset(name: str, root="data", **fetch_kwargs):
    """Fetch a registered dataset and read it with its layout adapter.

    Returns:
        ``"decathlon"``: :class:`data_utils.layouts.DecathlonTask`; ``"npz"``: the dict of
        :func:`data_utils.formats.load_npz`; ``"folder"``: the folder's path.
    """
    source = get_source(name)
    path = fetch(name, root, **fetch_kwargs)
    if source.layout == "decathlon":
        from data_utils import layouts

        return layouts.read_decathlon(path)
    if source.layout == "npz":
        from data_utils import formats

        return formats.load_npz(path)
    return path


def main(argv=None) -> None:
    """Command line: ``python -m data_utils.download list | fetch NAME [ROOT] | sha256 FILE``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the registered datasets")
    fetch_parser = sub.add_parser("fetch", help="download, verify and extract a dataset")
    fetch_parser.add_argument("name")
    fetch_parser.add_argument("root", nargs="?", default="data")
    digest_parser = sub.add_parser("sha256", help="print a file's SHA-256 (to pin it in the registry)")
    digest_parser.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "list":
        for source in REGISTRY.values():
            print(f"{source.name:20s} {source.description}")
    elif args.command == "fetch":
        print(fetch(args.name, args.root))
    else:
        print(file_digest(args.file, "sha256"))


if __name__ == "__main__":
    main()
