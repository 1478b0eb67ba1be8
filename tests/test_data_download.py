"""download(): offline, against file:// folders, a local HTTP server and archives in tmp_path."""

from __future__ import annotations

import hashlib
import http.server
import io as pyio
import tarfile
import threading
import zipfile
from pathlib import Path

import pooch
import pytest

from lungmtl.data.download import DATASETS, RemoteFile, download, safe_extract
from lungmtl.errors import InputError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(path: Path, members: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path.read_bytes()


@pytest.fixture
def server(tmp_path: Path) -> Path:
    """A folder standing in for the remote host."""
    s = tmp_path / "server"
    s.mkdir()
    return s


def register(monkeypatch: pytest.MonkeyPatch, *files: RemoteFile) -> None:
    monkeypatch.setitem(DATASETS, "toy", list(files))


def test_registry_has_the_zenodo_record() -> None:
    names = {f.filename for f in DATASETS["covid19-ct-seg"]}
    assert {"COVID-19-CT-Seg_20cases.zip", "Infection_Mask.zip", "Lung_Mask.zip"} <= names
    for f in DATASETS["covid19-ct-seg"]:
        assert f.url.startswith("https://zenodo.org/records/3757476/files/") and f.extract


def test_download_extracts_verifies_and_is_idempotent(
    tmp_path: Path, server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_zip(server / "Cases.zip", {"a.nii.gz": b"AAA", "sub/b.txt": b"BB"})
    (server / "notes.txt").write_bytes(b"hello")
    register(
        monkeypatch,
        RemoteFile("https://unused/Cases.zip", "Cases.zip", sha256=sha(data), extract=True),
        RemoteFile(
            "https://unused/notes.txt", "notes.txt", size=5, md5=hashlib.md5(b"hello").hexdigest()
        ),
    )
    dest = download("toy", tmp_path / "out", base_url=server.as_uri(), progress=False)
    assert (dest / "Cases" / "a.nii.gz").read_bytes() == b"AAA"
    assert (dest / "Cases" / "sub" / "b.txt").read_bytes() == b"BB"
    assert (dest / "notes.txt").read_bytes() == b"hello"
    assert not (dest / "Cases.zip").exists() and not list(dest.glob("*.part"))
    # Second call: nothing is fetched (the "server" is gone) and nothing changes.
    for p in server.iterdir():
        p.unlink()
    assert download("toy", dest, base_url=server.as_uri(), progress=False) == dest
    assert (dest / "Cases" / "a.nii.gz").read_bytes() == b"AAA"


def test_single_top_folder_is_not_doubled(tmp_path: Path) -> None:
    make_zip(tmp_path / "Lung_Mask.zip", {"Lung_Mask/x.nii.gz": b"1"})
    out = safe_extract(tmp_path / "Lung_Mask.zip", tmp_path / "Lung_Mask")
    assert (out / "x.nii.gz").read_bytes() == b"1"


def test_resume_continues_from_the_part_file(
    tmp_path: Path, server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = bytes(range(256)) * 40
    (server / "blob.bin").write_bytes(body)
    dest = tmp_path / "out"
    dest.mkdir()
    # A .part whose first half differs from the server's: only a true resume keeps it, so the
    # expected checksum is the one of (our prefix + the server's remainder).
    prefix = b"\x01" * (len(body) // 2)
    (dest / "blob.bin.part").write_bytes(prefix)
    want = prefix + body[len(prefix) :]
    register(monkeypatch, RemoteFile("https://unused/blob.bin", "blob.bin", sha256=sha(want)))
    download("toy", dest, base_url=server.as_uri(), progress=False)
    assert (dest / "blob.bin").read_bytes() == want


def test_a_whole_part_file_is_verified_not_fetched_again(
    tmp_path: Path, server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped after the download but before the rename left a complete .part: the next
    run verifies it and goes on, even with the server gone."""
    body = b"whole file" * 100
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "blob.bin.part").write_bytes(body)
    register(monkeypatch, RemoteFile("https://unused/blob.bin", "blob.bin", sha256=sha(body)))
    download("toy", dest, base_url=server.as_uri(), progress=False)  # server holds nothing
    assert (dest / "blob.bin").read_bytes() == body


def test_http_416_for_a_whole_part_file_is_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP server answers a range starting at the file's end with 416: the .part is then
    whole (its checksum decides), not a failed download to retry forever."""
    body = b"0123456789" * 50
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Range"))
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        dest = tmp_path / "out"
        dest.mkdir()
        register(monkeypatch, RemoteFile("https://unused/b.bin", "b.bin", md5="0" * 32))
        (dest / "b.bin.part").write_bytes(body)  # whole, but its md5 is not the published one
        base = f"http://127.0.0.1:{srv.server_port}"
        with pytest.raises(InputError, match="checksum mismatch"):
            download("toy", dest, base_url=base, progress=False)
        assert seen == [f"bytes={len(body)}-"] and not (dest / "b.bin.part").exists()
        register(monkeypatch, RemoteFile("https://unused/b.bin", "b.bin", size=len(body) + 1))
        (dest / "b.bin.part").write_bytes(
            body
        )  # no checksum: the .part cannot be trusted as whole, so fetch
        with pytest.raises(InputError, match=r"size 500 != expected 501"):
            download("toy", dest, base_url=base, progress=False)
    finally:
        srv.shutdown()
        srv.server_close()


def test_checksum_mismatch_removes_the_file(
    tmp_path: Path, server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_zip(server / "Cases.zip", {"a.txt": b"A"})
    register(
        monkeypatch,
        RemoteFile("https://unused/Cases.zip", "Cases.zip", sha256="0" * 64, extract=True),
    )
    with pytest.raises(InputError, match="checksum mismatch"):
        download("toy", tmp_path / "out", base_url=server.as_uri(), progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_malicious_zip_is_refused_and_nothing_is_left(
    tmp_path: Path, server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_zip(server / "Evil.zip", {"ok.txt": b"fine", "../evil": b"pwned"})
    register(
        monkeypatch,
        RemoteFile("https://unused/Evil.zip", "Evil.zip", sha256=sha(data), extract=True),
    )
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"escapes the target.*\.\./evil"):
        download("toy", out, base_url=server.as_uri(), progress=False)
    assert not (tmp_path / "evil").exists() and not (out.parent / "evil").exists()
    assert not (out / "Evil").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".") and "extract" in p.name]


def test_unsafe_archives_absolute_and_links(tmp_path: Path) -> None:
    make_zip(tmp_path / "abs.zip", {"/etc/owned": b"x"})
    with pytest.raises(InputError, match="absolute"):
        safe_extract(tmp_path / "abs.zip", tmp_path / "abs")
    for kind in ("sym", "hard"):
        tar = tmp_path / f"{kind}.tar.gz"
        with tarfile.open(tar, "w:gz") as t:
            info = tarfile.TarInfo("link")
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = "../../outside"
            t.addfile(info)
            payload = tarfile.TarInfo("data.txt")
            payload.size = 2
            t.addfile(payload, pyio.BytesIO(b"hi"))
        with pytest.raises(InputError, match="link"):
            safe_extract(tar, tmp_path / kind)
        assert not (tmp_path / kind).exists()


def test_tar_archive_extracts(tmp_path: Path) -> None:
    tar = tmp_path / "set.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        info = tarfile.TarInfo("dir/x.txt")
        info.size = 3
        t.addfile(info, pyio.BytesIO(b"xyz"))
    assert (safe_extract(tar, tmp_path / "set") / "dir" / "x.txt").read_bytes() == b"xyz"


def test_unknown_dataset_and_missing_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="covid19-ct-seg"):
        download("nope", tmp_path)
    register(monkeypatch, RemoteFile("https://unused/x.bin", "x.bin"))
    with pytest.raises(InputError, match="download failed"):
        download("toy", tmp_path / "o", base_url=(tmp_path / "empty").as_uri(), progress=False)


def test_unknown_checksum_is_recorded(
    tmp_path: Path, server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server / "x.bin").write_bytes(b"12345")
    register(monkeypatch, RemoteFile("https://unused/x.bin", "x.bin"))
    out = download("toy", tmp_path / "o", base_url=server.as_uri(), progress=False)
    assert (out / ".x.bin.done").read_text().strip() == sha(b"12345")
    assert pooch.file_hash(str(out / "x.bin")) == sha(b"12345")
