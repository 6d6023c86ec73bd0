"""shared.pretrained: a named file, else torchvision's file in the hub cache, else random init said once."""

from __future__ import annotations

import pytest
import torch

from shared.errors import DataError
from shared.pretrained import (
    RANDOM,
    TORCHVISION_FILES,
    find_weights,
    hub_checkpoints_dir,
    load_torchvision_weights,
)

torchvision = pytest.importorskip("torchvision")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A temporary, empty torch hub cache (the real one is never read)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    # set_dir pins the folder for the whole process: undo it, or later tests would ignore TORCH_HOME.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    torch.hub.set_dir(str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub" / "checkpoints"


def _resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def _other(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Different weights under the same names (cheaper than building another network)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in state.items()}


def test_file_names_are_torchvisions():
    from torchvision.models import get_model_weights

    for arch, names in TORCHVISION_FILES.items():
        urls = {w.url.rsplit("/", 1)[-1] for w in get_model_weights(arch)}
        assert set(names) <= urls, arch


def test_hub_cache_then_path_then_random(hub, tmp_path, capsys):
    names = TORCHVISION_FILES["resnet18"]
    assert hub_checkpoints_dir() == hub  # read at call time, after set_dir
    target = _resnet18()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    assert load_torchvision_weights(target, names, what="test-resnet18-a") == RANDOM
    assert load_torchvision_weights(target, names, what="test-resnet18-a") == RANDOM
    err = capsys.readouterr().err
    assert err.count("randomly initialised") == 1 and names[0] in err and str(hub) in err
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())

    reference = _other(before, 1)
    torch.save(reference, hub / names[0])
    assert find_weights(names) == hub / names[0]
    assert load_torchvision_weights(target, names, what="test-resnet18-a") == str(hub / names[0])
    assert all(torch.equal(reference[k], v) for k, v in target.state_dict().items())

    # A named file wins over the cache; a checkpoint wrapper and DDP's "module." prefix are accepted.
    other = _other(before, 2)
    torch.save({"state_dict": {f"module.{k}": v for k, v in other.items()}}, tmp_path / "mine.pth")
    assert load_torchvision_weights(target, names, tmp_path / "mine.pth") == str(tmp_path / "mine.pth")
    assert torch.equal(target.layer4[1].conv2.weight, other["layer4.1.conv2.weight"])


def test_missing_path_and_wrong_keys_are_one_line_errors(hub, tmp_path):
    names = TORCHVISION_FILES["resnet18"]
    with pytest.raises(DataError, match=r"missing\.pth: pretrained weights file not found"):
        find_weights(names, tmp_path / "missing.pth")
    target = _resnet18()
    before = target.conv1.weight.clone()
    # Another network's weights under torchvision's name: refused by name, nothing loaded.
    state = _other(target.state_dict(), 3)
    state["layer5.0.conv1.weight"] = state.pop("layer4.1.conv2.weight")
    torch.save(state, hub / names[0])
    with pytest.raises(DataError, match=r"resnet18-f37072fd\.pth: not ResNet-18 weights \(1 missing, 1 unexpected, "
                                        r"0 wrongly shaped keys, e\.g\. layer4\.1\.conv2\.weight\)"):
        load_torchvision_weights(target, names, what="ResNet-18")
    assert torch.equal(target.conv1.weight, before)
    # A classifier head of another size is fine when ignored (a backbone keeps only the features).
    state = _other(target.state_dict(), 4)
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    torch.save(state, tmp_path / "ten_classes.pth")
    with pytest.raises(DataError, match="2 wrongly shaped keys, e.g. fc.weight"):
        load_torchvision_weights(target, names, tmp_path / "ten_classes.pth", what="ResNet-18")
    load_torchvision_weights(target, names, tmp_path / "ten_classes.pth", what="ResNet-18", ignore=("fc.",))
    assert torch.equal(target.conv1.weight, state["conv1.weight"])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"junk\.pth: not a readable weights file"):
        load_torchvision_weights(target, names, tmp_path / "junk.pth")
