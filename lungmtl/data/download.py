"""Download public datasets with pooch: checksum-verified, resumable, safely extracted, idempotent
(docs/data-format.md, "Downloads").
"""

from __future__ import annotations

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

import pooch
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
        md5: hex digest, where known (Zenodo publishes md5); checked where no sha256 is given.
        extract: unpack the archive into ``to/<name without archive suffix>``.
    """

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    extract: bool = False

    @property
    def known_hash(self) -> str | None:
        """The hash pooch checks, ``"algorithm:hex"``: the sha256 where known, else the md5."""
        if self.sha256:
            return f"sha256:{self.sha256.lower()}"
        return f"md5:{self.md5.lower()}" if self.md5 else None


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


def _matches(path: Path, known_hash: str) -> bool:
    algorithm, digest = known_hash.split(":")
    return pooch.file_hash(str(path), alg=algorithm) == digest


class _ResumableDownload:
    """A pooch downloader that continues an interrupted download from ``<file>.part``."""

    def __init__(self, file: RemoteFile, part: Path, progress: bool):
        self.file, self.part, self.progress = file, part, progress

    def __call__(self, url: str, output_file: str, _pooch: object) -> None:
        f, part = self.file, self.part
        sized = f.size is None or (part.exists() and part.stat().st_size == f.size)
        # A .part finished by a run stopped while verifying needs no fetch.
        known = f.known_hash
        if not (part.exists() and known is not None and sized and _matches(part, known)):
            _fetch(url, part, f.size, self.progress)
        got = part.stat().st_size
        if f.size is not None and got != f.size:
            part.unlink()
            raise InputError(
                url, f"checksum mismatch: size {got} != expected {f.size} (file removed; run again)"
            )
        os.replace(part, output_file)  # pooch checks its hash, then moves it into place


class _Finish:
    """A pooch processor: unpack an archive all-or-nothing and write the file's done marker."""

    def __init__(self, to: Path, file: RemoteFile, keep_archives: bool):
        self.to, self.file, self.keep_archives = to, file, keep_archives

    def __call__(self, fname: str, _action: str, _pooch: object) -> str:
        path, f = Path(fname), self.file
        sha = pooch.file_hash(fname)
        if f.known_hash is None:
            log.warning("%s: no published checksum; computed sha256 %s", f.filename, sha)
        out = path
        if f.extract:
            out = safe_extract(path, self.to / _archive_stem(f.filename))
            if not self.keep_archives:
                path.unlink()
        _marker(self.to, f).write_text(sha + "\n")
        return str(out)


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
        try:
            pooch.retrieve(
                url,
                known_hash=f.known_hash,
                fname=f.filename,
                path=to,
                downloader=_ResumableDownload(f, to / f"{f.filename}.part", progress),
                processor=_Finish(to, f, keep_archives),
            )
        except InputError:
            raise
        except ValueError as e:  # pooch's hash mismatch; it has deleted the download
            raise InputError(url, f"checksum mismatch: {e} Run again to fetch it afresh.") from None
    return to
