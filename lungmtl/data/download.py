"""Download public datasets: streaming, resumable, checksum-verified, safely extracted.

``download(name, to)`` fetches every file of ``DATASETS[name]`` into ``to``:

* Streaming with ``urllib`` into ``<file>.part``; an interrupted download resumes from the
  ``.part`` (HTTP ``Range``; for ``file://`` URLs the source is read from the same offset).
* Verification: sha256 (and/or md5) where known. A mismatch raises ``InputError`` and the bad
  file is **removed** (resuming a corrupt ``.part`` could never verify). Where no checksum is
  known the computed sha256 is logged and recorded in the marker file.
* Archives (zip, tar, tar.gz) are extracted into a temporary folder inside ``to`` and renamed
  into place, so an interrupted or refused extraction leaves nothing partial. Members with
  absolute paths, ``..`` components, links, or device files are refused (the whole archive is).
  An archive ``X.zip`` becomes the folder ``to/X`` (a single top-level ``X/`` in the archive is
  not doubled). The archive is deleted after extraction unless ``keep_archives``.
* Idempotent: a marker ``to/.<file>.done`` (holding the sha256) is written after each file is
  verified (and extracted); a second call skips files whose marker and outputs exist.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ..errors import InputError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset.

    Attributes:
        url: where to fetch it.
        filename: the local file name (also appended to ``base_url`` when one is given).
        size: bytes, where known.
        sha256: hex digest, where known.
        md5: hex digest, where known (Zenodo publishes md5).
        extract: unpack the archive into ``to/<name without archive suffix>``.
    """

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    extract: bool = False


_ZENODO = "https://zenodo.org/records/3757476/files/{}?download=1"

# sha256 digests as recorded by torch-em (constantinpape/torch-em, datasets/medical/covid19_seg.py);
# they are checked on every download, so a wrong one shows up as a clear mismatch error.
DATASETS: dict[str, list[RemoteFile]] = {
    "covid19-ct-seg": [
        RemoteFile(
            _ZENODO.format("COVID-19-CT-Seg_20cases.zip"),
            "COVID-19-CT-Seg_20cases.zip",
            sha256="a5060480eff9315b069b086312dac4872777901fb80d268a5a83edd9f4e7b440",
            extract=True,
        ),
        RemoteFile(
            _ZENODO.format("Infection_Mask.zip"),
            "Infection_Mask.zip",
            sha256="87901c73fdd2230260e61d2dbc57bf56026efc28264006b8ea2bf411453c1694",
            extract=True,
        ),
        RemoteFile(
            _ZENODO.format("Lung_Mask.zip"),
            "Lung_Mask.zip",
            sha256="f060b0d0299939a6d95ddefdbfa281de1a779c4d230a5adbd32414711d6d8187",
            extract=True,
        ),
    ],
}


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _archive_stem(filename: str) -> str:
    for ext in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"):
        if filename.lower().endswith(ext):
            return filename[: -len(ext)]
    return filename


def _marker(to: Path, f: RemoteFile) -> Path:
    return to / f".{f.filename}.done"


def _done(to: Path, f: RemoteFile) -> bool:
    """The marker exists and so do the outputs it stands for."""
    out = to / _archive_stem(f.filename) if f.extract else to / f.filename
    return _marker(to, f).is_file() and out.exists()


def _fetch(url: str, part: Path, size: int | None, progress: bool) -> None:
    """Stream ``url`` into ``part``, continuing from its current length."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # longer than the real file: start over
        part.unlink()
        offset = 0
    scheme = urllib.parse.urlparse(url).scheme
    request = urllib.request.Request(url, headers={"User-Agent": "lungmtl"})
    if offset and scheme in ("http", "https"):
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            length = resp.headers.get("Content-Length")
            length = int(length) if length else None
            if scheme in ("http", "https"):
                if offset and getattr(resp, "status", None) != 206:
                    offset = 0  # the server ignored Range: the body is the whole file
                total = length + offset if length is not None else size
            else:  # file:// and friends: no Range, so read past what we already have
                _skip(resp, offset)
                total = length if length is not None else size
            mode = "ab" if offset else "wb"
            with (
                open(part, mode) as out,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    desc=part.name[: -len(".part")],
                    disable=not progress,
                ) as bar,
            ):
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the range starts at the end: the .part is whole
            return  # (or longer than the file: then its checksum fails and it is removed)
        raise InputError(url, f"download failed ({e}); run again to resume") from None
    except OSError as e:  # URLError, connection resets are OSErrors too
        raise InputError(url, f"download failed ({e}); run again to resume") from None


def _skip(resp: object, n: int) -> None:
    """Discard the first ``n`` bytes of a non-HTTP stream (``file://`` cannot seek via urllib)."""
    while n > 0:
        chunk = resp.read(min(CHUNK, n))  # type: ignore[attr-defined]
        if not chunk:
            break
        n -= len(chunk)


def _verify(path: Path, f: RemoteFile, where: str, *, remove: bool = True) -> str:
    """Check size and digests; on mismatch delete the file (unless not ``remove``) and raise.
    Returns the sha256."""
    sha = file_digest(path, "sha256")
    problems = []
    if f.size is not None and path.stat().st_size != f.size:
        problems.append(f"size {path.stat().st_size} != expected {f.size}")
    if f.sha256 and sha != f.sha256.lower():
        problems.append(f"sha256 {sha} != expected {f.sha256}")
    if f.md5:
        md5 = file_digest(path, "md5")
        if md5 != f.md5.lower():
            problems.append(f"md5 {md5} != expected {f.md5}")
    if problems:
        if not remove:
            raise InputError(where, "checksum mismatch: " + "; ".join(problems))
        path.unlink(missing_ok=True)
        raise InputError(
            where, "checksum mismatch: " + "; ".join(problems) + " (file removed; run again)"
        )
    if not (f.sha256 or f.md5):
        log.warning("%s: no published checksum; computed sha256 %s", f.filename, sha)
    return sha


def _safe_name(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise InputError(archive, f"refusing archive member with an absolute path: {name!r}")
    if ".." in p.parts:
        raise InputError(archive, f"refusing archive member that escapes the target: {name!r}")
    return p


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        for m in members:
            _safe_name(m.filename, archive)
            mode = m.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InputError(archive, f"refusing symbolic link in archive: {m.filename!r}")
        for m in members:
            z.extract(m, dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as t:
        members = t.getmembers()
        for m in members:
            _safe_name(m.name, archive)
            if m.issym() or m.islnk():
                raise InputError(archive, f"refusing link in archive: {m.name!r} -> {m.linkname!r}")
            if not (m.isfile() or m.isdir()):
                raise InputError(archive, f"refusing special file in archive: {m.name!r}")
        # The "data" filter re-checks all of the above inside tarfile itself.
        t.extractall(dest, members=members, filter="data")


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract ``archive`` to ``target`` (which must not exist) all-or-nothing.

    Raises:
        InputError: for an unsafe member (absolute path, ``..``, link, device) or a broken archive;
            nothing is left behind.
    """
    archive, target = Path(archive), Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, tmp)
            elif tarfile.is_tarfile(archive):
                _extract_tar(archive, tmp)
            else:
                raise InputError(archive, "not a zip or tar archive")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
            raise InputError(archive, f"broken archive ({e})") from None
        entries = list(tmp.iterdir())
        # An archive holding only "X/" extracts to target "X" without doubling the folder.
        src = (
            entries[0]
            if len(entries) == 1 and entries[0].is_dir() and (entries[0].name == target.name)
            else tmp
        )
        if target.exists():
            shutil.rmtree(target)  # an unmarked leftover from an earlier run
        os.replace(src, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download(
    name: str,
    to: str | Path,
    *,
    base_url: str | None = None,
    keep_archives: bool = False,
    progress: bool = True,
) -> Path:
    """Download (and extract) dataset ``name`` into folder ``to``.

    Args:
        name: a key of :data:`DATASETS`.
        to: the destination folder (created); e.g. ``data/covid19-ct-seg``, which then loads with
            ``load_sources`` (layout ``covid19-ct-seg``).
        base_url: fetch ``<base_url>/<filename>`` instead of each file's URL (a mirror, or a local
            ``file://`` folder for tests).
        keep_archives: keep archives after extracting them.
        progress: show a progress bar.

    Returns:
        ``to`` as a Path.

    Raises:
        InputError: unknown name (the message lists the known ones), a failed download, a
            checksum mismatch or an unsafe archive.
    """
    if name not in DATASETS:
        raise InputError(name, f"unknown dataset; known: {', '.join(sorted(DATASETS))}")
    to = Path(to).expanduser().absolute()
    to.mkdir(parents=True, exist_ok=True)
    for f in DATASETS[name]:
        if _done(to, f):
            log.info("%s: already downloaded and verified", f.filename)
            continue
        url = f"{base_url.rstrip('/')}/{f.filename}" if base_url else f.url
        final = to / f.filename
        if not final.exists():
            part = to / f"{f.filename}.part"
            sha = None
            sized = f.size is None or (part.exists() and part.stat().st_size == f.size)
            if part.exists() and (f.sha256 or f.md5) and sized:
                try:  # a .part finished by a run stopped while verifying: no fetch needed
                    sha = _verify(part, f, url, remove=False)
                except InputError:
                    sha = None
            if sha is None:
                _fetch(url, part, f.size, progress)
                sha = _verify(part, f, url)
            os.replace(part, final)
        else:
            sha = _verify(
                final, f, str(final)
            )  # left by an earlier run that stopped before extracting
        if f.extract:
            safe_extract(final, to / _archive_stem(f.filename))
            if not keep_archives:
                final.unlink()
        _marker(to, f).write_text(sha + "\n")
    return to
