"""Descriptors on small synthetic images whose answers are known by construction."""

import numpy as np
import pytest

from ltg_jax import descriptors


def square(
    size: int = 32,
    top: int = 4,
    left: int = 16,
    h: int = 8,
    w: int = 12,
    fg: float = 1.0,
    bg: float = -1.0,
    channels: int = 1,
) -> np.ndarray:
    """[size, size, channels] image in [-1, 1]: a fg rectangle on a bg background."""
    img = np.full((size, size, channels), bg, np.float32)
    img[top : top + h, left : left + w] = fg
    return img


@pytest.mark.parametrize("fg,bg", [(1.0, -1.0), (-1.0, 1.0), (0.2, -0.2)])
@pytest.mark.parametrize("channels", [1, 3])
def test_square_geometry(fg, bg, channels):
    d = descriptors.image_descriptors(square(fg=fg, bg=bg, channels=channels)[None])
    assert d["object_area"][0] == pytest.approx(8 * 12 / 32**2)
    # rows 4..11 and columns 16..27 -> pixel-centre centroid (8 / 32, 22 / 32)
    assert d["centre_y"][0] == pytest.approx(8 / 32)
    assert d["centre_x"][0] == pytest.approx(22 / 32)
    assert d["extent_h"][0] == pytest.approx(8 / 32)
    assert d["extent_w"][0] == pytest.approx(12 / 32)
    frac = 8 * 12 / 32**2
    lo, hi = sorted(((bg + 1) / 2, (fg + 1) / 2))
    expected_brightness = (fg + 1) / 2 * frac + (bg + 1) / 2 * (1 - frac)
    assert d["brightness"][0] == pytest.approx(expected_brightness, abs=1e-5)
    assert d["contrast"][0] == pytest.approx((hi - lo) * np.sqrt(frac * (1 - frac)), abs=1e-5)
    assert d["edge_density"][0] > 0


def test_centred_square_is_at_half():
    d = descriptors.image_descriptors(square(top=12, left=12, h=8, w=8)[None])
    assert d["centre_x"][0] == pytest.approx(0.5)
    assert d["centre_y"][0] == pytest.approx(0.5)


def test_empty_image_does_not_crash():
    d = descriptors.image_descriptors(np.zeros((2, 16, 16, 3), np.float32))
    for name in descriptors.DESCRIPTORS:
        assert np.all(np.isfinite(d[name])), name
    assert np.all(d["object_area"] == 0)
    assert np.all(d["centre_x"] == 0.5) and np.all(d["centre_y"] == 0.5)
    assert np.all(d["extent_w"] == 0) and np.all(d["extent_h"] == 0)
    assert np.all(d["edge_density"] == 0) and np.all(d["contrast"] == 0)


def test_bad_shape_names_the_fix():
    with pytest.raises(ValueError, match="batch axis"):
        descriptors.image_descriptors(np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="one label per image"):
        descriptors.describe_groups(np.zeros((3, 8, 8, 1)), np.zeros(2))


def _population(rng, n, size_range, fg_range):
    """n light-on-dark squares with random side, position and foreground level."""
    imgs = []
    for _ in range(n):
        s = int(rng.integers(*size_range))
        top, left = rng.integers(2, 32 - s - 2, size=2)
        imgs.append(square(top=top, left=left, h=s, w=s, fg=rng.uniform(*fg_range)))
    return np.stack(imgs)


def test_groups_z_and_words_pick_out_small_bright_cluster():
    rng = np.random.default_rng(0)
    reference = _population(rng, 64, (10, 16), (0.0, 0.4))
    same = _population(rng, 32, (10, 16), (0.0, 0.4))
    small = _population(rng, 32, (4, 7), (0.0, 0.4))
    images = np.concatenate([same, small])
    groups = np.array([3] * 32 + [7] * 32)
    out = descriptors.describe_groups(images, groups, reference)
    assert set(out["groups"]) == {3, 7}
    assert out["groups"][7]["n"] == 32
    z_same, z_small = out["groups"][3]["z"], out["groups"][7]["z"]
    assert z_small["object_area"] < -2 and z_small["extent_w"] < -2
    assert z_small["brightness"] < -1  # less bright foreground on a dark background
    assert all(abs(v) < 1 for v in z_same.values()), z_same

    words_small = descriptors.describe_in_words(out["groups"][7], out["reference"])
    assert "smaller object" in words_small and "area" in words_small
    assert "larger" not in words_small
    words_same = descriptors.describe_in_words(out["groups"][3], out["reference"])
    assert words_same.startswith("no descriptor differs")


def test_words_brighter_and_exact_numbers():
    rng = np.random.default_rng(1)
    reference = _population(rng, 40, (10, 16), (-0.2, 0.0))
    bright = _population(rng, 20, (10, 16), (0.8, 1.0))
    out = descriptors.describe_groups(bright, np.zeros(20, int), reference)
    stats, ref = out["groups"][0], out["reference"]
    words = descriptors.describe_in_words(stats, ref)
    assert "brighter" in words and "darker" not in words
    b, rb = stats["mean"]["brightness"], ref["mean"]["brightness"]
    assert f"brightness {b:.2f} vs {rb:.2f}" in words
    z = (b - rb) / ref["std"]["brightness"]
    assert f"z={z:+.1f}" in words


def test_identical_distribution_is_silent():
    rng = np.random.default_rng(2)
    imgs = _population(rng, 16, (6, 14), (0.0, 1.0))
    out = descriptors.describe_groups(imgs, np.zeros(16, int), imgs)
    assert all(v == pytest.approx(0.0) for v in out["groups"][0]["z"].values())
    words = descriptors.describe_in_words(out["groups"][0], out["reference"], threshold=0.5)
    assert words == "no descriptor differs from the unguided references by 0.5 std or more"
