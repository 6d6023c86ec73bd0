"""shared.cli: where a file-or-folder job writes, how bad files are skipped and reported, the metrics report."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from shared.cli import Job, format_table, report_metrics, resolve_jobs, run_jobs, write_json
from shared.errors import EXIT_SOME_FAILED, EXIT_USER_ERROR, ConfigError, DataError, InputsFailed, cli_entry
from shared.images import read_image, save_image


def _image(path, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _invert(job: Job):
    """A per-image step like the packages': read (raising on a bad file), compute, save."""
    return [save_image(job.target, 255 - read_image(job.source))]


def test_file_to_file(tmp_path):
    src = _image(tmp_path / "in" / "a.jpg")
    jobs = resolve_jobs(src, tmp_path / "x.png")
    assert jobs == [Job(src, tmp_path / "x.png")]
    assert run_jobs(jobs, _invert) == [tmp_path / "x.png"]
    assert (tmp_path / "x.png").is_file() and not (tmp_path / "x.png").is_dir()


@pytest.mark.parametrize("output", ["out", "existing.png"])
def test_file_to_folder_for_no_suffix_or_an_existing_folder(tmp_path, output):
    src = _image(tmp_path / "in" / "a.jpg")
    (tmp_path / "existing.png").mkdir()
    jobs = resolve_jobs(src, tmp_path / output)
    assert jobs == [Job(src, tmp_path / output / "a.png")]
    run_jobs(jobs, _invert)
    assert Image.open(tmp_path / output / "a.png").size == (10, 12)


def test_folder_to_folder(tmp_path, capsys):
    for name in ("b.png", "a.jpg"):
        _image(tmp_path / "in" / name)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    jobs = resolve_jobs(tmp_path / "in", tmp_path / "out")
    assert [j.target.name for j in jobs] == ["a.png", "b.png"]
    written = run_jobs(jobs, _invert)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"] == [p.name for p in written]
    assert "2 of 2 images written" in capsys.readouterr().out


def test_recursive_folder_keeps_sub_folders(tmp_path):
    _image(tmp_path / "in" / "x" / "a.jpg")
    _image(tmp_path / "in" / "b.png")
    jobs = resolve_jobs(tmp_path / "in", tmp_path / "out", recursive=True)
    assert sorted(j.target.relative_to(tmp_path / "out").as_posix() for j in jobs) == ["b.png", "x/a.png"]


def test_folder_with_one_corrupt_image_processes_the_rest_and_fails(tmp_path, capsys):
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / "in" / name)
    bad = tmp_path / "in" / "b.png"
    bad.write_bytes(bad.read_bytes()[:200])
    jobs = resolve_jobs(tmp_path / "in", tmp_path / "out")

    main = cli_entry(lambda: run_jobs(jobs, _invert))
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == EXIT_SOME_FAILED
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]  # nothing for b, not even a temp
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"error: {bad}: unreadable or truncated image") and err[0].endswith("(skipped)")
    assert err[1] == "error: 1 of 3 images failed (b.png); 2 written"


def test_failure_without_the_file_name_gets_it_and_all_failed_is_exit_2(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        _image(tmp_path / "in" / name)

    def refuse(job):
        raise DataError("too small for a 64×64 tile")

    with pytest.raises(InputsFailed) as info:
        run_jobs(resolve_jobs(tmp_path / "in", tmp_path / "out"), refuse)
    assert info.value.exit_status == EXIT_USER_ERROR and info.value.succeeded == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == f"error: {tmp_path / 'in' / 'a.png'}: too small for a 64×64 tile (skipped)"


def test_lone_bad_file_raises_its_own_error(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"a\.png: ") as info:
        run_jobs(resolve_jobs(src, tmp_path / "x.png"), _invert)
    assert not isinstance(info.value, InputsFailed)
    assert not (tmp_path / "x.png").exists()


def test_bad_paths_are_one_line_errors(tmp_path):
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match="missing: input file or folder not found"):
        resolve_jobs(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ConfigError, match="file.png: the input .* is a folder, so --output must be a folder"):
        resolve_jobs(tmp_path / "in", tmp_path / "file.png")
    with pytest.raises(ConfigError, match="must be a folder"):
        resolve_jobs(tmp_path / "in", tmp_path / "new.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images found"):
        resolve_jobs(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match="would overwrite the input"):
        resolve_jobs(tmp_path / "in", tmp_path / "in")
    _image(tmp_path / "in" / "a.jpg")
    with pytest.raises(DataError, match="a.jpg and a.png would both be written to"):
        resolve_jobs(tmp_path / "in", tmp_path / "out")


ROWS = {"img_1": {"psnr": 30.0, "ssim": 0.91234}, "long_name_2": {"psnr": float("inf"), "ssim": 1.0}}
MEAN = {"psnr": 30.0, "ssim": 0.956170}


def test_table_is_aligned_with_a_mean_row():
    table = format_table(ROWS, MEAN, labels={"psnr": "PSNR"})
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1  # every line equally wide: aligned
    assert lines[0].split() == ["image", "PSNR", "ssim"]
    assert lines[2].split() == ["img_1", "30.0000", "0.9123"]
    assert lines[3].split() == ["long_name_2", "inf", "1.0000"]
    assert lines[-1].split() == ["mean", "(2)", "30.0000", "0.9562"]
    assert set(lines[1]) == set(lines[-2]) == {"-"}
    assert format_table(None, MEAN, ["ssim"]).splitlines()[-1].split() == ["mean", "0.9562"]


def test_report_metrics_writes_plain_json_and_prints_the_table(tmp_path, capsys):
    import torch

    rows = {"img_1": {"psnr": np.float32(30.0), "ssim": torch.tensor(0.5)}, "img_2": {"psnr": math.inf, "ssim": 1.0}}
    data = report_metrics(tmp_path / "sub" / "m.json", {"psnr": 30.0, "ssim": 0.75}, rows, rows_key="images",
                          extra={"checkpoint": tmp_path / "c.pth"})
    on_disk = json.loads((tmp_path / "sub" / "m.json").read_text())
    assert on_disk == data == {
        "checkpoint": str(tmp_path / "c.pth"), "count": 2, "mean": {"psnr": 30.0, "ssim": 0.75},
        "images": {"img_1": {"psnr": 30.0, "ssim": 0.5}, "img_2": {"psnr": None, "ssim": 1.0}},
    }
    out = capsys.readouterr().out
    assert "img_2" in out and "mean (2)" in out and f"wrote {tmp_path / 'sub' / 'm.json'}" in out
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.json"]  # no temp file left


def test_write_json_keeps_the_old_file_when_the_data_is_not_json(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
