"""TrainConfig presets, config files, overrides and the plain-dict round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuropbr.train import build_arg_parser, resolve_config
from neuropbr.train_config import TrainConfig, load_config
from shared.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def test_spec_defaults():
    cfg = TrainConfig()
    assert cfg.model.encoder_backbone == "resnet50" and cfg.model.transformer_depth == 4
    assert (cfg.model.transformer_dim, cfg.model.transformer_num_heads, cfg.model.transformer_mlp_ratio) == (2048, 32, 4)
    assert (cfg.loss.w_l1, cfg.loss.w_ssim, cfg.loss.w_normal, cfg.loss.w_gan) == (1.0, 0.3, 0.5, 0.05)
    assert cfg.loss.gan_loss_type == "hinge" and cfg.training.gan_start_epoch == 5
    assert cfg.data.image_size == 2048 and cfg.data.val_ratio == 0.1 and cfg.training.seed == 42
    assert cfg.model.discriminator_n_layers == 6 and cfg.training.save_every_n_epochs == 5


@pytest.mark.parametrize("name", ["default", "quick_test", "lightweight", "high_quality", "fast_iteration",
                                  "normal_focused", "configs/high_quality.py", "real_cpu", "configs/real_cpu.py"])
def test_presets_and_files_load(name):
    cfg = load_config(name).finalize()
    assert isinstance(cfg, TrainConfig)
    if name == "quick_test":
        assert cfg.model.encoder_backbone == "resnet18" and cfg.training.epochs == 20
    if name == "lightweight":
        assert not cfg.model.use_gan and cfg.loss.w_gan == 0.0
    if "high_quality" in name:
        assert cfg.model.encoder_backbone == "resnet101"
    if "real_cpu" in name:
        assert not cfg.model.use_gan and cfg.optimizer.scheduler == "none" and cfg.data.val_ratio == 0.2
    # Off everywhere until a run shows it helps (README, "Recommended recipe on real materials").
    assert not cfg.model.normal_detail_head


def test_custom_config_template(tmp_path: Path):
    path = tmp_path / "my_config.py"
    path.write_text(
        "from train_config import TrainConfig\n\n"
        "def get_config():\n"
        "    cfg = TrainConfig()\n"
        "    cfg.model.encoder_backbone = 'resnet101'\n"
        "    cfg.model.transformer_depth = 6\n"
        "    cfg.training.epochs = 200\n"
        "    cfg.optimizer.scheduler = 'cosine'\n"
        "    return cfg\n"
    )
    cfg = load_config(str(path))
    assert cfg.model.transformer_depth == 6 and cfg.training.epochs == 200


def test_bad_configs(tmp_path: Path):
    with pytest.raises(ConfigError, match="config not found"):
        load_config("no_such_preset")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_config(str(bad))
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="broken.py"):
        load_config(str(broken))
    cfg = TrainConfig()
    cfg.optimizer.scheduler = "linear"
    with pytest.raises(ConfigError, match="optimizer.scheduler"):
        cfg.finalize()
    with pytest.raises(ConfigError, match="unknown key 'model.nope'"):
        TrainConfig.from_dict({"model": {"nope": 1}})


def test_round_trip_and_cli_overrides():
    cfg = load_config("quick_test")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    args = build_arg_parser().parse_args(
        ["--config", "quick_test", "--synthetic", "--image-size", "32", "--batch-size", "3", "--epochs", "4",
         "--use-dirty", "--seed", "7", "--device", "cpu", "--checkpoint-dir", "ck"])
    cfg = resolve_config(args)
    assert cfg.data.synthetic and cfg.data.synthetic_image_size == 32 and cfg.data.image_size == 32
    assert (cfg.data.batch_size, cfg.training.epochs, cfg.training.seed) == (3, 4, 7)
    assert cfg.data.render_curriculum == 2 and cfg.training.checkpoint_dir == "ck"
    args = build_arg_parser().parse_args(["--render-curriculum", "1"])
    assert resolve_config(args).data.render_curriculum == 1
