"""A .zip of DICOM studies (an anonymiser's or a PACS web export), unpacked safely into a
temporary folder: no member may land outside it (absolute names, ``..``, links), and a zip that
would unpack to more than :data:`MAX_BYTES` (a zip bomb, or not a scan) is refused."""

from __future__ import annotations

import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import InputError

#: Most bytes a zip may unpack to (a 5-series study of 600 slices is about 1.6 GB).
MAX_BYTES = 16 * 2**30
#: Most members a zip may hold.
MAX_MEMBERS = 200_000


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's relative path, or None where it would leave the folder or is a link."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        return None
    if stat.S_ISLNK(info.external_attr >> 16):
        return None
    return path


def unpack_zip(
    path: Path, max_bytes: int = MAX_BYTES
) -> tuple[tempfile.TemporaryDirectory, list[str]]:
    """Unpack ``path`` into a new temporary folder; returns it and notes on what was left out.

    Raises:
        InputError: naming ``path``: not a readable zip, encrypted, too large, too many members.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(path, f"not a readable zip archive ({e})") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_MEMBERS:
            raise InputError(path, f"{len(members)} files in the zip: more than {MAX_MEMBERS}")
        if any(m.flag_bits & 0x1 for m in members):
            raise InputError(path, "encrypted zip: unpack it with its password first")
        declared = sum(m.file_size for m in members)
        if declared > max_bytes:
            raise InputError(
                path, f"unpacks to {declared / 2**30:.1f} GiB: more than {max_bytes / 2**30:g} GiB"
            )
        tmp = tempfile.TemporaryDirectory(prefix="lungmtl-zip-")
        root, unsafe, broken, written = Path(tmp.name), [], [], 0
        try:
            for m in members:
                rel = _member_path(m)
                if rel is None:
                    unsafe.append(m.filename)
                    continue
                target = root.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(m) as src, open(target, "wb") as dst:
                        written += _copy(src, dst, max_bytes - written, path, max_bytes)
                except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC error, truncated
                    target.unlink(missing_ok=True)
                    broken.append(f"{m.filename} ({e})")
        except BaseException:
            tmp.cleanup()
            raise
    notes = []
    if unsafe:
        notes.append(f"{len(unsafe)} zip member(s) with unsafe paths left out: {unsafe[:3]}")
    if broken:
        notes.append(f"{len(broken)} damaged zip member(s) left out: {'; '.join(broken[:3])}")
    return tmp, notes


def _copy(src, dst, budget: int, path: Path, max_bytes: int) -> int:
    """Copy in chunks, counting the bytes actually unpacked (a member's stated size can lie)."""
    n = 0
    while chunk := src.read(1 << 20):
        n += len(chunk)
        if n > budget:
            raise InputError(path, f"unpacks to more than {max_bytes / 2**30:g} GiB (zip bomb?)")
        dst.write(chunk)
    return n
