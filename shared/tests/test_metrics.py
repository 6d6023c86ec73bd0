"""shared.metrics: PSNR/SSIM against hand-computed values, the per-image contract, and torchmetrics on real images."""

from pathlib import Path

import pytest
import torch

from shared.images import read_image, to_tensor
from shared.metrics import PSNR_CAP, psnr, ssim, ssim_map

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
C1, C2 = 0.01**2, 0.03**2


def test_constant_offset_gives_the_hand_computed_psnr():
    target = torch.zeros(1, 3, 16, 16)
    assert psnr(target + 0.1, target).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert psnr(target + 0.01, target).item() == pytest.approx(40.0, abs=1e-4)  # MSE 1e-4
    assert psnr(torch.zeros(4, 4, 4)[None], torch.ones(1, 4, 4, 4)).item() == pytest.approx(0.0)


def test_identical_images_give_the_psnr_cap_and_ssim_one():
    a = torch.rand(2, 3, 32, 32)
    assert torch.equal(psnr(a, a), torch.full((2,), PSNR_CAP))
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-6)
    assert torch.allclose(ssim_map(a, a), torch.ones(2, 3, 32, 32), atol=1e-5)


def test_outputs_are_per_image_float32_and_chw_is_a_batch_of_one():
    a, b = torch.rand(3, 3, 20, 24), torch.rand(3, 3, 20, 24)
    for metric in (psnr, ssim):
        out = metric(a, b)
        assert out.shape == (3,) and out.dtype == torch.float32
        single = metric(a[1], b[1])
        assert single.shape == (1,) and single.item() == pytest.approx(out[1].item(), abs=1e-6)
    assert ssim_map(a, b).shape == (3, 3, 20, 24)


def test_batch_values_are_each_images_own():
    torch.manual_seed(0)
    target = torch.rand(3, 3, 32, 32)
    pred = target + torch.tensor([0.1, 0.01, 0.0]).view(3, 1, 1, 1)
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 40.0, PSNR_CAP], abs=1e-3)
    noisy = (target + torch.tensor([0.3, 0.05, 0.0]).view(3, 1, 1, 1) * torch.randn_like(target)).clamp(0, 1)
    values = ssim(noisy, target)
    assert values[0] < values[1] < values[2] == pytest.approx(1.0, abs=1e-6)
    for i in range(3):
        assert values[i].item() == pytest.approx(ssim(noisy[i : i + 1], target[i : i + 1]).item(), abs=1e-6)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.2, 0.6
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    # No variance: the contrast-structure term is C2 / C2 = 1.
    assert ssim(x, y).item() == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-5)


def test_ssim_of_one_window_matches_the_formula():
    # An 11×11 image has a single valid window; compute its Gaussian-weighted statistics by hand.
    torch.manual_seed(1)
    x, y = torch.rand(1, 1, 11, 11, dtype=torch.float64), torch.rand(1, 1, 11, 11, dtype=torch.float64)
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    w = torch.outer(g, g) / g.sum() ** 2
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2
    cov = (w * x * y).sum() - mx * my
    expected = ((2 * mx * my + C1) * (2 * cov + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
    assert ssim(x, y).item() == pytest.approx(expected.item(), abs=1e-6)


def test_ssim_is_symmetric_and_drops_with_noise():
    torch.manual_seed(0)
    a = torch.rand(1, 3, 32, 32)
    noisy = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    assert ssim(a, noisy).item() < 0.9
    assert ssim(a, noisy).item() == pytest.approx(ssim(noisy, a).item(), abs=1e-6)


def test_data_range_255_agrees_with_range_1():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 32, 32)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    a8, b8 = (a * 255).round(), (b * 255).round()
    assert torch.allclose(psnr(a8, b8, data_range=255.0), psnr(a8 / 255, b8 / 255), atol=1e-4)
    assert torch.allclose(ssim(a8, b8, data_range=255.0), ssim(a8 / 255, b8 / 255), atol=1e-5)
    # uint8 tensors are read as their values, so they take data_range=255 too.
    assert torch.allclose(psnr(a8.byte(), b8.byte(), 255.0), psnr(a8, b8, 255.0))
    assert torch.allclose(ssim(a8.byte(), b8.byte(), 255.0), ssim(a8, b8, 255.0))


def test_mismatched_or_wrong_rank_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"psnr: pred and target differ in shape: \(1, 3, 16, 16\) vs \(1, 3, 16, 17\)"):
        psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))
    with pytest.raises(ValueError, match="ssim: pred and target differ in shape"):
        ssim(torch.rand(2, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\) or \(C, H, W\) images, got shape \(16, 16\)"):
        psnr(torch.rand(16, 16), torch.rand(16, 16))
    with pytest.raises(ValueError, match="at least 11×11, got 16×8"):
        ssim(torch.rand(1, 3, 8, 16), torch.rand(1, 3, 8, 16))


def test_ssim_is_differentiable_and_ignores_autocast():
    torch.manual_seed(0)
    target = torch.rand(1, 3, 24, 24)
    pred = torch.rand(1, 3, 24, 24, requires_grad=True)
    (1 - ssim(pred, target).mean()).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = ssim(pred, target)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(ssim(pred, target).item(), abs=1e-7)


def _real_pairs(folder: str, first: str, second: str, count: int = 5) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """The first ``count`` pairs, top-left 256² crops: a whole 512² pair costs ~0.5 s on a small CPU."""
    base = DATA / folder
    if not (base / first).is_dir():
        pytest.skip(f"real {folder} images not found at {base} (the data folder sits beside the repository)")
    names = [p.name for p in sorted((base / first).iterdir()) if (base / second / p.name).is_file()][:count]
    def load(path: Path) -> torch.Tensor:
        return to_tensor(read_image(path))[:, :256, :256]
    return [(n, load(base / first / n), load(base / second / n)) for n in names]


@pytest.mark.parametrize(("folder", "first", "second"), [("deblur", "blur", "sharp"),
                                                        ("retouch", "original", "retouch")])
def test_agrees_with_skimage_on_real_images(folder, first, second):
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (a dev dependency) is the reference")
    pairs = _real_pairs(folder, first, second)
    assert len(pairs) == 5
    single = {}
    for name, pred, target in pairs:
        p, t = pred.double().numpy(), target.double().numpy()
        ref_psnr = metrics.peak_signal_noise_ratio(t, p, data_range=1.0)
        ref_ssim, ref_map = metrics.structural_similarity(t, p, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                                          sigma=1.5, use_sample_covariance=False, full=True)
        smap = ssim_map(pred, target)
        single[name] = ssim(pred, target)
        assert psnr(pred, target).item() == pytest.approx(ref_psnr, abs=1e-4), name
        assert single[name].item() == pytest.approx(ref_ssim, abs=1e-4), name
        # skimage's border windows reflect differently (edge repeated); inside they agree. Per pixel,
        # float32 against float64 where variances are tiny: ~1e-4, not 1e-7.
        inner = smap[0, :, 5:-5, 5:-5].double() - torch.from_numpy(ref_map[:, 5:-5, 5:-5])
        assert inner.abs().max() < 1e-3, name
    batch = [(n, p, t) for n, p, t in pairs if p.shape == pairs[0][1].shape]
    assert len(batch) >= 2
    batched = ssim(torch.stack([p for _, p, _ in batch]), torch.stack([t for _, _, t in batch]))
    assert torch.allclose(batched, torch.cat([single[n] for n, _, _ in batch]), atol=1e-6)
