import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from shared.archives import archive_members, copy_member, read_member_image
from shared.errors import DataError


def _png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 6, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _sources(tmp_path):
    files = {"set/a.png": _png_bytes(10), "set/sub/b.txt": b"hello"}
    folder = tmp_path / "folder"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with tarfile.open(tmp_path / "set.tar.gz", "w:gz") as archive:
        for name in files:
            archive.add(folder / name, arcname=name)
    return files, [folder, tmp_path / "set.zip", tmp_path / "set.tar.gz"]


def test_folder_zip_and_tar_list_the_same_files_with_their_bytes(tmp_path):
    files, sources = _sources(tmp_path)
    for source in sources:
        members = dict(archive_members(source))
        assert sorted(members) == sorted(files), source
        copy_member(members["set/sub/b.txt"], tmp_path / "out" / source.name / "b.txt")
        assert (tmp_path / "out" / source.name / "b.txt").read_bytes() == b"hello"
        image = read_member_image("set/a.png", members["set/a.png"], tmp_path)
        assert image.shape == (4, 6, 3) and int(image[0, 0, 0]) == 10
        assert not (tmp_path / "a.png").exists()  # the scratch copy is gone


def test_errors_name_the_source_or_the_member(tmp_path):
    with pytest.raises(DataError, match="missing.zip: not found"):
        archive_members(tmp_path / "missing.zip")
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(DataError, match="notes.txt: not a folder, a zip or a tar archive"):
        archive_members(tmp_path / "notes.txt")
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        archive.writestr("set/broken.png", b"\x89PNG\r\n\x1a\n broken")
    (name, opener), = archive_members(tmp_path / "bad.zip")
    with pytest.raises(DataError, match=r"^set/broken.png: "):
        read_member_image(name, opener, tmp_path)
