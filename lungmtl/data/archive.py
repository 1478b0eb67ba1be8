"""A .zip of DICOM studies (an anonymiser's or a PACS web export), read safely: no member may
land outside the temporary folder it is unpacked into (absolute names, ``..``, drive letters,
links), and a zip that would unpack to more than :data:`MAX_BYTES` (a zip bomb, or not a scan)
is refused. The temporary folder is under ``$TMPDIR`` (the system's temporary folder)."""

from __future__ import annotations

import importlib.util
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pydicom

from ..errors import InputError

#: Most bytes a zip may unpack to (a 5-series study of 600 slices is about 1.6 GB).
MAX_BYTES = 16 * 2**30
#: Most members a zip may hold.
MAX_MEMBERS = 200_000
#: What reading a damaged member raises (bad CRC, bad deflate data, cut short).
DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError)


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's relative path, or None where it would leave the folder or is a link."""
    path = PurePosixPath(info.filename.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        return None
    if stat.S_ISLNK(info.external_attr >> 16):
        return None
    return path


def _open(path: Path, max_bytes: int) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """The archive and its file members, after the checks that refuse a whole zip."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(path, f"not a readable zip archive ({e})") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    problem = None
    if len(members) > MAX_MEMBERS:
        problem = f"{len(members)} files in the zip: more than {MAX_MEMBERS}"
    elif any(m.flag_bits & 0x1 for m in members):
        problem = "encrypted zip: unpack it with its password first"
    elif (declared := sum(m.file_size for m in members)) > max_bytes:
        problem = f"unpacks to {declared / 2**30:.1f} GiB: more than {max_bytes / 2**30:g} GiB"
    elif unsupported := {m.compress_type for m in members if not _supported(m.compress_type)}:
        names = sorted(zipfile.compressor_names.get(c, str(c)) for c in unsupported)
        problem = f"compression {names} that Python cannot read: unpack it with 7-Zip first"
    if problem:
        archive.close()
        raise InputError(path, problem)
    return archive, members


def _supported(method: int) -> bool:
    """Stored, deflate, bzip2 and LZMA (where Python has the module); not Deflate64 & co."""
    module = {
        zipfile.ZIP_STORED: "zlib",
        zipfile.ZIP_DEFLATED: "zlib",
        zipfile.ZIP_BZIP2: "bz2",
        zipfile.ZIP_LZMA: "lzma",
    }.get(method)
    return module is not None and importlib.util.find_spec(module) is not None


def zip_headers(
    path: Path, max_bytes: int = MAX_BYTES
) -> Iterator[tuple[Path, pydicom.Dataset | None, str | None]]:
    """(member, header or None, error or None) for each member, read from the archive without
    unpacking it (only a header's bytes are inflated): enough to plan the cases of a zip.

    Raises:
        InputError: naming ``path``, as :func:`unpack_zip` would.
    """
    archive, members = _open(path, max_bytes)
    with archive:
        for m in members:
            rel = _member_path(m)
            if rel is None:
                continue
            name = Path(*rel.parts)
            strict = name.suffix.lower() == ".dcm"
            try:
                with archive.open(m) as f:
                    strict = strict or f.read(132)[128:] == b"DICM"
                    f.seek(0)
                    ds = pydicom.dcmread(f, stop_before_pixels=True, force=strict)
                yield name, ds, None
            except DAMAGED as e:
                yield name, None, f"{path}!{m.filename}: damaged zip member ({e})"
            except Exception as e:  # not DICOM, or a DICOM header pydicom cannot parse
                error = f"{path}!{m.filename}: cannot read DICOM ({e})" if strict else None
                yield name, None, error


def unpack_zip(
    path: Path, max_bytes: int = MAX_BYTES
) -> tuple[tempfile.TemporaryDirectory, list[str]]:
    """Unpack ``path`` into a new temporary folder; returns it and notes on what was left out.

    Raises:
        InputError: naming ``path``: not a readable zip, encrypted, too large, too many members,
            a compression Python cannot read, or a temporary folder that cannot take it (full).
    """
    archive, members = _open(path, max_bytes)
    with archive:
        tmp = tempfile.TemporaryDirectory(prefix="lungmtl-zip-")
        root, unsafe, broken, written = Path(tmp.name), [], [], 0
        try:
            for m in members:
                rel = _member_path(m)
                target = root.joinpath(*rel.parts) if rel is not None else None
                if target is None or (target.exists() and not target.is_file()):
                    unsafe.append(m.filename)
                    continue
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError):  # a file and a folder of one name
                    unsafe.append(m.filename)
                    continue
                with archive.open(m) as src, open(target, "wb") as dst:
                    n = _copy(src, dst, max_bytes - written, path, max_bytes, root)
                if n is None:
                    target.unlink(missing_ok=True)
                    broken.append(m.filename)
                else:
                    written += n
        except BaseException:
            tmp.cleanup()
            raise
    notes = []
    if unsafe:
        notes.append(
            f"{len(unsafe)} zip member(s) with unsafe or clashing paths left out: {unsafe[:3]}"
        )
    if broken:
        notes.append(f"{len(broken)} damaged zip member(s) left out: {', '.join(broken[:3])}")
    return tmp, notes


def _copy(src, dst, budget: int, path: Path, max_bytes: int, root: Path) -> int | None:
    """Copy in chunks, counting the bytes actually unpacked; None for a damaged member (bad
    CRC or data). A write that fails (a full disk) refuses the zip: nothing is left out
    silently."""
    n = 0
    while True:
        try:
            chunk = src.read(1 << 20)
        except DAMAGED:
            return None
        if not chunk:
            return n
        n += len(chunk)
        if n > budget:
            raise InputError(path, f"unpacks to more than {max_bytes / 2**30:g} GiB (zip bomb?)")
        try:
            dst.write(chunk)
        except OSError as e:
            raise InputError(
                path, f"cannot unpack into {root} ({e}): set TMPDIR to a folder with room"
            ) from None
