import cv2
import numpy as np

from abpn_retouch import masks
from abpn_retouch.masks import MaskRecipe, generate_gt_mask

SPEC = dict(magnifier=5, mask_threshold=3, reference="input")


def hand_pair():
    """Flat grey 40×40 input; the retouched copy brightens a 10×10 square by 4 and one lone pixel by 4."""
    image = np.full((40, 40, 3), 100, np.uint8)
    target = image.copy()
    target[10:20, 10:20] += 4
    target[30, 30] += 4
    return image, target


def test_value_channel_is_max_of_rgb():
    image = np.array([[[10, 200, 30], [90, 20, 60]]], np.uint8)
    np.testing.assert_array_equal(masks.value_channel(image), [[200, 90]])


def test_amplify_and_threshold():
    diff = np.array([[0, 1, 2, 100]], np.uint8)
    np.testing.assert_array_equal(masks.amplify(diff, 5), [[0, 5, 10, 255]])
    np.testing.assert_array_equal(masks.threshold(np.array([[2, 3, 4]], np.uint8), 3), [[0, 0, 255]])


def test_opening_removes_lone_pixel_and_dilation_grows():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:10, 5:10] = 255
    mask[15, 15] = 255
    out = masks.open_then_dilate(mask, 3, 5, 1)
    assert out[15, 15] == 0
    assert out[3:12, 3:12].min() == 255 and out[2, 2] == 0


def test_full_recipe_on_hand_made_pair():
    image, target = hand_pair()
    # Hand-derived: |ΔV| = 4 in the square and at (30, 30), ×5 = 20 > 3; opening keeps the square, drops the
    # lone pixel; a 5×5 dilation grows the square by 2 px; 7×7 Gaussian blur; INTER_AREA to 20×20.
    expected_binary = np.zeros((40, 40), np.float32)
    expected_binary[8:22, 8:22] = 1.0
    expected = cv2.resize(cv2.GaussianBlur(expected_binary, (7, 7), 0), (20, 20), interpolation=cv2.INTER_AREA)
    got = generate_gt_mask(image, target, MaskRecipe(**SPEC))
    assert got.shape == (20, 20) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got[7, 7] > 0.99 and got[0, 0] == 0 and got[15, 15] == 0


def test_threshold_is_applied_after_magnifier():
    image, target = hand_pair()
    # 4 × 0.5 = 2, not above 3: nothing is marked.
    assert generate_gt_mask(image, target, MaskRecipe(magnifier=0.5, mask_threshold=3, reference="input")).max() == 0


def ramp_pair():
    """A 64×64 horizontal grey ramp (V = 60..186); the retouch applies a global curve V -> 1.25 V + 10 and
    brightens one 12×12 square by a further 20 levels (a local edit)."""
    ramp = np.tile((60 + 2 * np.arange(64)).astype(np.uint8), (64, 1))
    image = np.repeat(ramp[..., None], 3, axis=2)
    target = np.clip(image.astype(np.float32) * 1.25 + 10, 0, 255)
    target[20:32, 40:52] += 20
    return image, np.clip(target, 0, 255).astype(np.uint8)


def test_tone_curve_residual_keeps_only_the_local_edit():
    image, target = ramp_pair()
    residual = masks.tone_curve_residual(image, target)
    # Each V level is a column of 64 pixels, 12 of them in the square: the column median is the global
    # curve, so only the square is left, at 20 levels.
    assert residual[:, :40].max() == 0 and residual[:20].max() == 0 and residual[32:].max() == 0
    np.testing.assert_array_equal(residual[20:32, 40:52], 20)
    # Against the input (the spec), the global curve alone marks every pixel.
    assert masks.value_difference(image, target).min() >= 25


def test_calibrated_recipe_marks_the_local_edit_not_the_global_one():
    image, target = ramp_pair()
    calibrated = generate_gt_mask(image, target)
    assert 0.03 < masks.coverage(calibrated) < 0.1  # the 12×12 square dilated, of 64×64
    assert calibrated[10:16, 20:26].min() > 0.95 and calibrated[:5].max() == 0
    assert masks.coverage(generate_gt_mask(image, target, MaskRecipe(**SPEC))) == 1.0


def test_real_local_retouch_masks_cover_a_plausible_fraction(real_data):
    from shared.images import read_image

    names = sorted(p.name for p in (real_data / "original").iterdir() if p.name.startswith("ffhqr"))
    assert names, "no FFHQR-style (local skin retouch) pair in the sample data"
    for name in names:
        image, target = read_image(real_data / "original" / name), read_image(real_data / "retouch" / name)
        calibrated = masks.coverage(generate_gt_mask(image, target))
        assert 0.01 < calibrated < 0.3, (name, calibrated)
        # The spec's recipe marks almost everything: the reason for the calibration.
        assert masks.coverage(generate_gt_mask(image, target, MaskRecipe(**SPEC))) > 0.9, name
