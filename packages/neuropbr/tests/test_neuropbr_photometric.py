"""Photometric stereo from the renderer's three views, and the generator's ``photometric_input`` switch."""

from __future__ import annotations

import pytest
import torch

from neuropbr import MultiViewPBRGenerator
from neuropbr.losses.losses import normal_angle
from neuropbr.models.decoders.unet import PRIOR_GATE_LOGIT, PBRHeads
from neuropbr.train_config import TrainConfig
from neuropbr.utils.photometric import inverse_tone_map, photometric_stereo
from neuropbr.utils.render import _WHITE_POINT, render_views


def _material(normal: torch.Tensor, roughness: float = 1.0, albedo: float = 0.6) -> dict[str, torch.Tensor]:
    _, h, w = normal.shape
    return {"albedo": torch.full((3, h, w), albedo), "roughness": torch.full((1, h, w), roughness),
            "metallic": torch.zeros(1, h, w), "normal": normal}


def _constant_normal(x: float, y: float, size: int = 32) -> torch.Tensor:
    n = torch.tensor([x, y, 1.0])
    return (n / n.norm()).view(3, 1, 1).expand(3, size, size).clone()


def _degrees(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(normal_angle(pred[None], target[None]))[0]


def test_inverse_tone_map_undoes_the_renderers_tone_map():
    radiance = torch.linspace(0.0, 3.0, 31)
    mapped = radiance * (1.0 + radiance / _WHITE_POINT**2) / (1.0 + radiance)
    assert torch.allclose(inverse_tone_map(mapped), radiance, atol=1e-4)


def test_photometric_stereo_recovers_a_tilt_from_rendered_views():
    # A rough dielectric (little specular) tilted 23° along the lights' well-observed diagonal.
    target = _constant_normal(-0.3, 0.3)
    flat = _constant_normal(0.0, 0.0)
    views = render_views(_material(target))
    undamped = photometric_stereo(views, ridge=0.0)
    assert undamped.shape == (3, 32, 32)
    assert torch.allclose(undamped.norm(dim=0), torch.ones(32, 32), atol=1e-4)
    assert float(_degrees(undamped, target).median()) < 4.0 < 22.0 < float(_degrees(flat, target).median())
    # The default damping pulls the tilt towards flat but keeps its direction: much closer than flat.
    damped = photometric_stereo(views)
    assert float(_degrees(damped, target).mean()) < 0.6 * float(_degrees(flat, target).mean())
    assert float(damped[0].mean()) < -0.1 < 0.1 < float(damped[1].mean())
    # A flat surface stays flat under the damped estimate (the undamped one is thrown off at the corners).
    assert float(_degrees(photometric_stereo(render_views(_material(flat))), flat).max()) < 1.0


def test_photometric_stereo_is_independent_of_albedo_and_batches():
    torch.manual_seed(0)
    tilt = 0.3 * torch.randn(2, 24, 24)
    normal = torch.nn.functional.normalize(torch.cat([tilt, torch.ones(1, 24, 24)]), dim=0)
    dark, bright = (render_views(_material(normal, albedo=a)) for a in (0.3, 0.8))
    both = photometric_stereo(torch.stack([dark, bright]))
    assert both.shape == (2, 3, 24, 24)
    assert float(_degrees(both[0], both[1]).mean()) < 1.0
    assert torch.allclose(both[0], photometric_stereo(dark), atol=1e-5)
    flat = _constant_normal(0.0, 0.0, 24)
    assert float(_degrees(both[1], normal).mean()) < float(_degrees(flat, normal).mean())
    with pytest.raises(ValueError, match="expected views"):
        photometric_stereo(torch.rand(1, 2, 3, 8, 8))


def test_prior_head_gates_the_photometric_slope():
    torch.manual_seed(0)
    heads = PBRHeads(4, detail_channels=2, prior=True)
    x, detail = torch.randn(1, 4, 5, 5), torch.randn(1, 2, 5, 5)
    prior = torch.tensor([0.6, 0.0, 0.8]).view(1, 3, 1, 1).expand(1, 3, 5, 5)
    # At initialisation: slope (0.75, 0) times the gate sigmoid(PRIOR_GATE_LOGIT) · (1 - metallic), no residual.
    out = heads(x, detail, prior)
    gate = torch.sigmoid(torch.tensor(PRIOR_GATE_LOGIT)) * (1.0 - out["metallic"])
    expected = torch.nn.functional.normalize(torch.cat([0.75 * gate, torch.zeros_like(gate), torch.ones_like(gate)], 1),
                                             dim=1)
    assert torch.allclose(out["normal"], expected, atol=1e-6)
    flat = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 5, 5)
    # A metal (no diffuse shading to read) ignores the prior ...
    heads.heads["metallic"][-1].bias.data[0] = 30.0
    assert torch.allclose(heads(x, detail, prior)["normal"], flat, atol=1e-6)
    # ... and so does a closed gate.
    heads.heads["metallic"][-1].bias.data[0] = -30.0
    heads.heads["normal"][-1].bias.data[2] = -30.0
    assert torch.allclose(heads(x, detail, prior)["normal"], flat, atol=1e-6)
    with pytest.raises(ValueError, match="prior"):
        heads(x, detail)
    with pytest.raises(ValueError, match="detail"):
        PBRHeads(4, prior=True)


def test_photometric_input_switch_widens_the_input_and_follows_the_views(tiny_config):
    torch.manual_seed(0)
    cfg = tiny_config(photometric_input=True)
    model = MultiViewPBRGenerator(cfg).eval()
    plain = MultiViewPBRGenerator(tiny_config()).eval()
    assert model.input_skip[0].in_channels == plain.input_skip[0].in_channels + 3 == 12
    # Stored in the config, so a checkpoint rebuilds the same model.
    stored = cfg.to_dict()
    assert stored["model"]["photometric_input"] is True
    rebuilt = MultiViewPBRGenerator(stored).eval()
    rebuilt.load_state_dict(model.state_dict())
    # Views of a tilted surface, normalised as training feeds them: at initialisation the model already
    # tilts its normal the photometric way; the plain model starts from flat and does not.
    target = _constant_normal(-0.3, 0.3)
    views = render_views(_material(target))[None]
    mean, std = torch.tensor(cfg.transform.mean).view(3, 1, 1), torch.tensor(cfg.transform.std).view(3, 1, 1)
    inputs = (views - mean) / std
    with torch.no_grad():
        normal, again = model(inputs)["normal"][0], rebuilt(inputs)["normal"][0]
        plain_normal = plain(inputs)["normal"][0]
    assert torch.allclose(normal, again)
    flat_error = float(_degrees(_constant_normal(0.0, 0.0), target).mean())
    assert float(_degrees(normal, target).mean()) < flat_error - 2.0
    assert float(_degrees(plain_normal, target).mean()) > flat_error - 1.0
    # Odd sizes pad the photometric normal with the views.
    with torch.no_grad():
        assert model(torch.randn(1, 9, 30, 22))["normal"].shape == (1, 3, 30, 22)


def test_configs_without_the_switch_load_as_before(tiny_config):
    torch.manual_seed(0)
    old = tiny_config().to_dict()
    del old["model"]["photometric_input"]  # a checkpoint written before the switch existed
    assert TrainConfig.from_dict(old).model.photometric_input is False
    model = MultiViewPBRGenerator(old)
    model.load_state_dict(MultiViewPBRGenerator(tiny_config()).state_dict())
    assert model.input_skip[0].in_channels == 9
