"""What the spec promises: JPEG trimaps, ``python main.py`` with no flags, the configured checkpoint
names, and a discriminator whose verdict does not depend on what else is in its batch."""

from __future__ import annotations

import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from alphagan_matting.cfg_loader import load_config
from alphagan_matting.dataset import load_labels, prepare_labels
from alphagan_matting.evaluate import evaluate_folders
from alphagan_matting.main import build_parser, default_csv, resolve_csv
from alphagan_matting.models import PatchDiscriminator
from alphagan_matting.schemas import MattingBatch
from alphagan_matting.train_pipeline.steps import TrainParts, train_step
from alphagan_matting.train_pipeline.trainer import make_manager
from alphagan_matting.utils import TrimapNotes, build_discriminator, build_generator, read_trimap
from shared.amp import MixedPrecision
from shared.errors import ConfigError, DataError

PKG = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "matting"
needs_data = pytest.mark.skipif(not (DATA / "original").is_dir(), reason=f"real matting samples not found at {DATA}")
QUICK = PKG / "alphagan_matting" / "configs" / "quick_test.yaml"


# ------------------------------------------------------------------------------------- JPEG trimaps
@needs_data
def test_real_trimap_saved_as_jpeg_is_quantised_and_said_once(tmp_path, capsys):
    fg = tmp_path / "AIM"
    for stem in ("GT01", "GT02"):
        for sub in ("original", "mask"):
            (fg / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / sub / f"{stem}.png", fg / sub / f"{stem}.png")
        (fg / "trimap").mkdir(exist_ok=True)
        Image.open(DATA / "trimap" / f"{stem}.png").convert("L").save(fg / "trimap" / f"{stem}.jpg", quality=75)
    clean = np.asarray(Image.open(DATA / "trimap" / "GT01.png").convert("L"))
    jpeg = np.asarray(Image.open(fg / "trimap" / "GT01.jpg"))
    assert not np.isin(jpeg, (0, 128, 255)).all()  # compression left values a strict check refuses

    notes = TrimapNotes()
    read = read_trimap(fg / "trimap" / "GT01.jpg", notes)
    assert set(np.unique(read)) == {0, 128, 255} and notes.count == 1
    assert (read == clean).mean() > 0.99  # ringing flips a few edge pixels at most

    csv = prepare_labels(fg, DATA / "bg", tmp_path / "dataset_labels.csv", test_fraction=0.5)
    err = [line for line in capsys.readouterr().err.splitlines() if "trimap" in line]
    assert len(err) == 1 and err[0].startswith("note: 2 trimap(s)") and "GT01.jpg" in err[0]
    assert "background <= 85, foreground >= 170" in err[0]
    assert {Path(r["trimap"]).suffix for r in load_labels(csv)} == {".jpg"}

    # Evaluation takes them too: the GT alpha scored against itself is perfect.
    scores = evaluate_folders(fg / "mask", fg / "mask", fg / "trimap")[0]
    assert scores["SAD"] == 0 and scores["MSE"] == 0
    assert capsys.readouterr().err.count("note: 2 trimap(s)") == 1


# -------------------------------------------------------------------------- python main.py, no flags
def test_default_csv_is_beside_main_py(tmp_path, monkeypatch):
    app, elsewhere = tmp_path / "app", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert default_csv(app) == app / "dataset" / "dataset_labels.csv"
    assert default_csv() == elsewhere / "dataset" / "dataset_labels.csv"  # the console script: current folder
    parse = build_parser().parse_args
    assert resolve_csv(parse(["--synthetic"]), app) is None
    assert resolve_csv(parse(["--csv", "x.csv"]), app) == Path("x.csv")
    with pytest.raises(DataError, match=r"app.dataset.dataset_labels\.csv: labels CSV not found .*--csv PATH"):
        resolve_csv(parse([]), app)
    (app / "dataset").mkdir(parents=True)
    (app / "dataset" / "dataset_labels.csv").write_text("x")
    assert resolve_csv(parse([]), app) == app / "dataset" / "dataset_labels.csv"


def test_main_py_without_flags_reads_the_csv_beside_it(tmp_path, monkeypatch, capsys):
    """A copy of main.py in a folder of its own, run from another folder, reads that folder's dataset/."""
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(PKG / "main.py", app / "main.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(app / "main.py")])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(app / "main.py"), run_name="__main__")
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {app / 'dataset' / 'dataset_labels.csv'}: labels CSV not found")

    (app / "dataset").mkdir()
    (app / "dataset" / "dataset_labels.csv").write_text("original,trimap\n")
    with pytest.raises(SystemExit):
        runpy.run_path(str(app / "main.py"), run_name="__main__")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: {app / 'dataset' / 'dataset_labels.csv'}: missing column(s) mask, background, split " \
                  "(has: original, trimap)"


# ------------------------------------------------------------------------------- checkpoint names
def _config(tmp_path: Path, name: str, **colab) -> Path:
    cfg = yaml.safe_load(QUICK.read_text())
    cfg["general"]["colab"].update(colab)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_checkpoint_names_apply_in_every_mode(tmp_path):
    """test_alphagan_train.py runs Colab mode through main(); the manager is what names the files."""
    plain = make_manager(load_config(_config(tmp_path, "plain.yaml", use_colab=0, best_chkp_name="best_chkp",
                                             last_chkp_name="last_chkp")))
    assert (plain.best_path.name, plain.latest_path.name) == ("best_chkp.pth", "last_chkp.pth")
    assert plain.save_every_n_epochs == 1 and plain.periodic_path(1).name == "checkpoint_epoch_0001.pth"
    default = make_manager(load_config(PKG / "alphagan_matting" / "configs" / "default.yaml"))
    assert (default.best_path.name, default.latest_path.name) == ("best_chkp.pth", "last_chkp.pth")

    colab = make_manager(load_config(_config(tmp_path, "colab.yaml", use_colab=1, best_chkp_name="b",
                                             last_chkp_name="l")))
    assert (colab.best_path.name, colab.latest_path.name, colab.save_every_n_epochs) == ("b.pth", "l.pth", 0)
    quick = make_manager(load_config(QUICK))  # the quick start's files, as the README's next commands read them
    assert (quick.best_path.name, quick.latest_path.name) == ("best.pth", "latest.pth")

    for bad, message in ((dict(best_chkp_name="sub/best"), "plain file name"),
                         (dict(last_chkp_name="checkpoint_epoch_0001"), "plain file name"),
                         (dict(best_chkp_name="same", last_chkp_name="same"), "must differ")):
        with pytest.raises(ConfigError, match=message):
            load_config(_config(tmp_path, "bad.yaml", **bad))


# ---------------------------------------------------------------------------------- discriminator
def test_discriminator_verdict_on_a_fake_is_the_same_in_d_step_and_g_pass():
    torch.manual_seed(0)
    cfg = load_config(QUICK)
    size, b = 32, 3
    g, d = build_generator(cfg.model), build_discriminator(cfg.model)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    d.register_forward_hook(lambda _m, args, out: seen.append((args[0].detach(), out.detach())))
    opt_g = torch.optim.AdamW(g.parameters(), lr=1e-3)
    opt_d = torch.optim.AdamW(d.parameters(), lr=0.0)  # D's weights stay put: same weights in both passes
    const = torch.optim.lr_scheduler.LambdaLR
    parts = TrainParts(g, d, opt_g, opt_d, const(opt_g, lambda _: 1.0), const(opt_d, lambda _: 1.0),
                       MixedPrecision("fp32"), MixedPrecision("fp32"),
                       torch.tensor(cfg.general.mean).view(1, 3, 1, 1), torch.tensor(cfg.general.std).view(1, 3, 1, 1))
    alpha = torch.rand(b, 1, size, size)
    trimap = torch.full_like(alpha, 0.5)
    trimap[..., :8] = 0.0
    fg, bg = torch.rand(b, 3, size, size), torch.rand(b, 3, size, size)
    comp = alpha * fg + (1 - alpha) * bg
    batch = MattingBatch(image=(comp - parts.mean) / parts.std, trimap=trimap, alpha=alpha, fg=fg, bg=bg,
                         composite=comp)
    train_step(parts, batch, cfg, global_step=0, max_grad_norm=None)
    (d_in, d_out), (g_in, g_out) = seen
    assert d_in.shape[0] == 2 * b and g_in.shape[0] == b and torch.equal(d_in[b:], g_in)
    torch.testing.assert_close(d_out[b:], g_out, rtol=1e-5, atol=1e-5)
    # The real half must not move the fakes' logits either (batch statistics would).
    alone = PatchDiscriminator(in_channels=4, width=8).train()
    x = torch.randn(4, 4, 32, 32)
    torch.testing.assert_close(alone(x)[2:], alone(x[2:]), rtol=1e-5, atol=1e-5)
