"""Explicit, opt-in download of the official CIFAR-10 archives (nothing else in safetynet downloads).

``download_cifar10(to, form="bin")`` fetches Krizhevsky's archive from
https://www.cs.toronto.edu/~kriz/cifar.html, checks the md5 published on that page (and a sha256
if you pin one), extracts it safely and moves the result into place in one rename:

1. stream the archive into a temp folder inside ``to`` (hashing on the fly);
2. refuse it on a checksum mismatch;
3. extract only regular files and folders under the expected top folder (no absolute paths,
   no ``..``, no links or devices) into the temp folder and check the expected batch files;
4. rename ``<tmp>/cifar-10-batches-<form>`` onto ``<to>/cifar-10-batches-<form>``.

Any failure removes the temp folder, so an interrupted or tampered download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from ..cli_config import setting
from ..errors import DataError, InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where an archive comes from and what it must hash to."""

    url: str
    md5: str | None
    folder: str  # the archive's single top-level folder
    files: tuple[str, ...]  # files that must be inside it
    sha256: str | None = None


_BIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
_PY_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

# md5 sums as published on https://www.cs.toronto.edu/~kriz/cifar.html
SOURCES: dict[str, Source] = {
    "bin": Source("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                  "cifar-10-batches-bin", _BIN_FILES),
    "py": Source("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                 "cifar-10-batches-py", _PY_FILES),
}

# Indirection so tests can serve a fake archive without a network.
_urlopen = urllib.request.urlopen
_CHUNK = 1 << 20


def _fetch(url: str, dest: Path, timeout: float) -> tuple[str, str]:
    """Stream ``url`` into ``dest``; return its (md5, sha256) hex digests."""
    from ..progress import progress

    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with _urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) is not None else None
            with progress(total=int(total) if total else None, desc="downloading", unit="B", unit_scale=True) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    md5.update(chunk)
                    sha.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"could not download {url}: {reason}; check the network, or download it by hand, "
                        "unpack it and pass the folder with --data-dir") from None
    return md5.hexdigest(), sha.hexdigest()


def _safe_members(tar: tarfile.TarFile, folder: str, archive: str) -> list[tarfile.TarInfo]:
    """Every member, after checking it is a plain file or folder inside ``folder``."""
    members = tar.getmembers()
    for m in members:
        p = PurePosixPath(m.name)
        if p.is_absolute() or m.name.startswith(("/", "\\")) or ".." in p.parts or "\\" in m.name:
            raise DataError(f"refusing archive {archive}: member {m.name!r} would be written outside the target folder")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"refusing archive {archive}: member {m.name!r} is a link or special file")
        if not p.parts or p.parts[0] != folder:
            raise DataError(f"refusing archive {archive}: member {m.name!r} is not inside {folder}/")
    return members


def download_cifar10(to: str | os.PathLike[str], form: str = "bin", *, sha256: str | None = None,
                     timeout: float = 60.0, source: Source | None = None) -> Path:
    """Download, verify and extract CIFAR-10 into ``to``; return ``to/cifar-10-batches-<form>``.

    ``form`` is ``"bin"`` (binary version, 162 MB) or ``"py"`` (python version, 163 MB). If the
    target folder already exists it is returned as is (delete it to download again). ``sha256``
    pins the archive further; ``source`` overrides URL and checksums (mirrors, tests).
    """
    if form not in SOURCES:
        raise InputError(f"form must be one of {', '.join(SOURCES)}, got {form!r}")
    src = source or SOURCES[form]
    if sha256 is not None:
        src = Source(src.url, src.md5, src.folder, src.files, sha256.lower())
    if src.md5 is None and src.sha256 is None:
        raise InputError("refusing to download without a checksum: give an md5 or sha256")
    to = Path(to)
    target = to / src.folder
    if target.exists():
        log.info("%s already exists; not downloading", target)
        return target
    created = not to.exists()
    to.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=to) as tmp_name:
            tmp = Path(tmp_name)
            archive = tmp / "archive.tar.gz"
            log.info("downloading %s", src.url)
            got_md5, got_sha = _fetch(src.url, archive, timeout)
            for algo, want, got in (("md5", src.md5, got_md5), ("sha256", src.sha256, got_sha)):
                if want is not None and got != want.lower():
                    raise DataError(f"checksum mismatch for {src.url}: {algo} is {got}, expected {want}; "
                                    "the download is corrupt or was tampered with, nothing was kept: try again")
            out = tmp / "extract"
            out.mkdir()
            try:
                with tarfile.open(archive, "r:*") as tar:
                    members = _safe_members(tar, src.folder, src.url)
                    # the "data" filter (Python >= 3.11.4) repeats our checks inside tarfile itself
                    kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    tar.extractall(out, members=members, **kw)
            except (tarfile.TarError, EOFError, OSError) as e:
                if isinstance(e, DataError):
                    raise
                raise DataError(f"corrupt archive from {src.url}: {e}; try again") from None
            missing = [f for f in src.files if not (out / src.folder / f).is_file()]
            if missing:
                raise DataError(f"archive from {src.url} lacks {', '.join(missing)} in {src.folder}/; it is not CIFAR-10")
            os.replace(out / src.folder, target)
    except BaseException:
        if created:
            shutil.rmtree(to, ignore_errors=True)
        raise
    log.info("CIFAR-10 (%s form) is in %s", form, target)
    return target


@dataclass
class DownloadConfig:
    """``safetynet data download``."""

    dataset: Literal["cifar10"] = setting(help="the data set to download", positional=True)
    out: str = setting(help="folder to unpack into (gets cifar-10-batches-bin/ or -py/)")
    form: Literal["bin", "py"] = setting("bin", "binary or python version of the archive")
    sha256: str | None = setting(None, "also require this sha256 of the archive")


def download(cfg: DownloadConfig) -> dict:
    """Run ``cfg``; returns ``{"dataset", "form", "path"}``."""
    path = download_cifar10(cfg.out, cfg.form, sha256=cfg.sha256)
    return {"dataset": cfg.dataset, "form": cfg.form, "path": str(path)}
