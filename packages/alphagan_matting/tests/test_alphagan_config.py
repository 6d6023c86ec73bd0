"""Config loading: the spec's example, and clear errors for bad files."""

from __future__ import annotations

import pytest

from alphagan_matting.cfg_loader import load_config
from shared.errors import ConfigError

DEFAULT = "configs/default.yaml"


def test_default_config_matches_spec_example():
    cfg = load_config(DEFAULT)
    assert cfg.general.random_seed == 1669
    assert cfg.general.mean == [0.485, 0.456, 0.406] and cfg.general.batch_size == 5
    assert cfg.general.colab.best_chkp_name == "best_chkp"
    assert cfg.train.D.scheduler.start_lr == pytest.approx(1e-5)  # YAML reads '1e-5' as a string
    assert cfg.train.G.scheduler.end_lr == pytest.approx(3e-4)
    assert cfg.train.losses.lambda_gan_g == pytest.approx(0.15)
    assert cfg.train.amp.dtype == "bf16" and cfg.train.epoches == 5000
    assert cfg.test.resize_size == 256 and cfg.test.logging.log_io_n_batches == 10
    assert cfg.model.layers == [3, 4, 6, 3]  # optional section omitted: ResNet-50


def test_quick_test_config_loads():
    cfg = load_config("configs/quick_test.yaml")
    assert cfg.train.crop_size == 64 and cfg.model.base_width == 8


def test_real_cpu_recipe_config_loads():
    """The recommended CPU recipe: a narrow generator without the GAN term, fp32, sparse periodic files."""
    cfg = load_config("configs/real_cpu.yaml")
    assert cfg.model.base_width == 16 and cfg.model.layers == [2, 2, 2, 2]
    assert cfg.train.use_gan_loss == 0 and cfg.train.amp.use_amp == 0 and cfg.train.crop_size == 192
    assert cfg.train.save_chkp_n_epoches == 100


def _write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def _default_text():
    from alphagan_matting.cfg_loader import resolve_config_path

    return resolve_config_path(DEFAULT).read_text()


def test_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, _default_text().replace("  crop_size: 256", "  crop_size: 256\n  crop_sise: 128"))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'train\.crop_sise'"):
        load_config(path)


def test_missing_key_names_key(tmp_path):
    path = _write(tmp_path, _default_text().replace("    weight_decay: 5e-4\n", ""))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*missing key 'train\.optimizer\.weight_decay'"):
        load_config(path)


def test_malformed_yaml_names_file(tmp_path):
    path = _write(tmp_path, "general:\n  random_seed: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: malformed YAML at line"):
        load_config(path)


def test_wrong_type_and_range(tmp_path):
    path = _write(tmp_path, _default_text().replace("batch_size: 5", "batch_size: five"))
    with pytest.raises(ConfigError, match="'general.batch_size' must be an integer"):
        load_config(path)
    path = _write(tmp_path, _default_text().replace("dtype: bf16", "dtype: fp8"))
    with pytest.raises(ConfigError, match="'train.amp.dtype' must be bf16 or fp16"):
        load_config(path)


def test_python_tags_are_refused(tmp_path):
    path = _write(tmp_path, "general: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config("nope.yaml")
