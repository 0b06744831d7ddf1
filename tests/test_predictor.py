"""Predictor, epistemic heads, scorer and bundle: shapes, purity, one pass, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltg_jax import predictor, signals

K, M = 10, 4


@pytest.fixture(scope="module")
def tiny():
    """A tiny classifier + heads with params, and a batch of images in [-1, 1]."""
    model = predictor.ConvClassifier(num_classes=K, widths=(4, 8), feature_dim=16, norm_groups=2)
    heads = predictor.EpistemicHeads(num_classes=K, num_heads=M, hidden=8)
    images = jax.random.uniform(jax.random.key(0), (3, 32, 32, 1), minval=-1, maxval=1)
    variables = model.init(jax.random.key(1), images)
    features, _ = model.apply(variables, images)
    params = {
        "predictor": variables["params"],
        "heads": heads.init(jax.random.key(2), features)["params"],
    }
    return model, heads, params, images


def test_classifier_shapes_and_pure_apply(tiny):
    model, _, params, images = tiny
    assert set(model.init(jax.random.key(1), images)) == {"params"}  # no batch statistics
    features, logits = model.apply({"params": params["predictor"]}, images)
    assert features.shape == (3, 16) and logits.shape == (3, K)
    # Per-sample normalisation: an image's output does not depend on the rest of the batch.
    _, alone = model.apply({"params": params["predictor"]}, images[:1])
    np.testing.assert_allclose(alone, logits[:1], rtol=1e-5, atol=1e-5)


def test_mean_pooling_accepts_other_sizes_and_unknown_pooling_names_the_choices():
    model = predictor.ConvClassifier(widths=(4,), feature_dim=8, norm_groups=2, pooling="mean")
    images = jnp.zeros((2, 20, 20, 1))
    features, logits = model.apply(model.init(jax.random.key(0), images), images)
    assert features.shape == (2, 8) and logits.shape == (2, 10)
    bad = predictor.ConvClassifier(widths=(4,), norm_groups=2, pooling="max")
    with pytest.raises(ValueError, match="'flatten' or 'mean'"):
        bad.init(jax.random.key(0), images)


def test_heads_are_independent_and_pass_gradients_to_the_image(tiny):
    model, heads, params, images = tiny
    features, _ = model.apply({"params": params["predictor"]}, images)
    member_logits = heads.apply({"params": params["heads"]}, features)
    assert member_logits.shape == (3, M, K)
    kernel = params["heads"]["heads"]["out"]["kernel"]
    assert kernel.shape == (M, 8, K)
    assert not np.allclose(kernel[0], kernel[1])  # each head its own init
    # Guidance differentiates the epistemic signal w.r.t. the image, through the backbone.
    score = predictor.make_scorer(predictor.module_apply(model), predictor.module_apply(heads))
    grad = jax.grad(lambda x: jnp.sum(score.jitted(params, x)["epistemic"]))(images)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_scorer_one_backbone_pass_and_signals(tiny):
    model, heads, params, images = tiny
    calls = []

    def counting_apply(p, x):
        calls.append(1)
        return model.apply({"params": p}, x)

    score = predictor.make_scorer(
        counting_apply, predictor.module_apply(heads), return_outputs=True
    )
    out = score(params, images, jnp.array([0, 1, 2]))
    assert len(calls) == 1  # traced once, one backbone call inside the trace
    assert {"entropy", "energy", "max_softmax", "epistemic", "loss", "logits", "features"} <= set(
        out
    )
    _, logits = model.apply({"params": params["predictor"]}, images)
    np.testing.assert_allclose(out["entropy"], signals.entropy(logits), rtol=1e-5)
    score(params, images * 0.5, jnp.array([0, 1, 2]))
    assert len(calls) == 1  # same shapes: no retrace


def test_scorer_is_jitted_and_differentiable(tiny):
    model, heads, params, images = tiny
    score = predictor.make_scorer(predictor.module_apply(model), predictor.module_apply(heads))
    # The bare jitted function works on its own, and inside jax.grad (range check skipped).
    assert hasattr(score.jitted, "lower")
    direct = score.jitted(params, images)
    np.testing.assert_allclose(direct["epistemic"], score(params, images)["epistemic"])
    grad = jax.grad(lambda x: jnp.sum(score(params, x)["entropy"]))(images)
    assert grad.shape == images.shape and np.all(np.isfinite(grad))


def test_scorer_accepts_any_predictor_function():
    def linear_apply(w, x):  # a user's own classifier: any (params, images) -> (h, logits)
        h = x.reshape(x.shape[0], -1)
        return h, h @ w

    score = predictor.make_scorer(linear_apply, channels=3)
    images = jnp.zeros((2, 4, 4, 3))
    out = score({"predictor": jnp.ones((48, 5))}, images)
    np.testing.assert_allclose(out["entropy"], np.log(5.0), rtol=1e-6)
    assert "epistemic" not in out


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((32, 32, 1), np.float32), r"images\[None\]"),
        (np.zeros((2, 32, 32, 3), np.float32), "expects 1"),
        (np.zeros((2, 1, 32, 32), np.float32), "NCHW to NHWC"),
        (np.full((2, 32, 32, 1), 255.0, np.float32), r"x / 127.5 - 1"),
        (np.zeros((2, 32, 32, 1), np.uint8), "pass floats"),
    ],
)
def test_scorer_rejects_bad_images_with_the_fix(tiny, images, match):
    model, heads, params, _ = tiny
    score = predictor.make_scorer(predictor.module_apply(model), predictor.module_apply(heads))
    with pytest.raises(ValueError, match=match):
        score(params, images)


def test_bundle_roundtrip_gives_identical_scores(tiny, tmp_path):
    model, heads, params, images = tiny
    path = predictor.save_predictor_bundle(
        tmp_path / "b.msgpack", model, params, heads, {"note": "test"}
    )
    bundle = predictor.load_predictor_bundle(path)
    assert bundle.predictor == model and bundle.heads == heads
    assert bundle.metadata == {"note": "test"}
    expected = predictor.make_scorer(predictor.module_apply(model), predictor.module_apply(heads))(
        params, images
    )
    got = bundle.scorer()(bundle.params, images)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_load_bundle_missing_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.epistemic_head"):
        predictor.load_predictor_bundle(tmp_path / "nope.msgpack")


@pytest.mark.parametrize(
    ("path", "min_accuracy", "has_heads"),
    [(predictor.SHIPPED_PREDICTOR, 0.78, True), (predictor.SHIPPED_ORACLE, 0.88, False)],
)
def test_shipped_bundles_classify_real_test_images(path, min_accuracy, has_heads):
    from ltg_jax.data import fashion_mnist, pipeline

    arrays = fashion_mnist.load_shipped()
    images = np.stack([pipeline.to_model_image(x[..., None]) for x in arrays["test_images"][:500]])
    labels = arrays["test_labels"][:500]
    bundle = predictor.load_predictor_bundle(path)
    assert (bundle.heads is not None) == has_heads
    out = bundle.scorer(return_outputs=True)(bundle.params, images)
    accuracy = float(np.mean(np.argmax(out["logits"], -1) == labels))
    assert accuracy >= min_accuracy, (path, accuracy)
    assert ("epistemic" in out) == has_heads
