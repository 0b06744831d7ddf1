"""Our Flax UNet / VAE / CLIP / tokenizer against stored diffusers+transformers outputs.

The golden outputs (tests/fixtures/tiny_sd_outputs.npz) come from tools/make_fixtures.py;
nothing here imports torch except the live test, which is skipped without it.
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltg_jax.models import (
    abstract_params,
    class_context,
    class_embedder_from_config,
    clip_encode,
    clip_from_config,
    decode_latents,
    init_params,
    tokenize,
    unet_apply,
    unet_from_config,
    vae_decode,
    vae_encode,
    vae_from_config,
)
from ltg_jax.models.unet import timestep_embedding
from ltg_jax.weights import load_pipeline

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
FOLDERS = {"sd1": FIXTURES / "tiny_sd", "sd2": FIXTURES / "tiny_sd2"}
ATOL = 1e-4
# A minimal UNet (two levels, one cross-attention block each way) for gradient tests: the
# fixture UNets take several times longer to differentiate and compile on one core.
SMALL_UNET = dict(
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[8, 8],
    layers_per_block=1,
    norm_num_groups=4,
    cross_attention_dim=8,
    attention_head_dim=2,
)
SMALL_VAE = dict(
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    block_out_channels=[4, 8],
    norm_num_groups=2,
)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "tiny_sd_outputs.npz") as f:
        return dict(f)


@pytest.fixture(scope="module", params=["sd1", "sd2"])
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def pipes():
    return {v: load_pipeline(folder) for v, folder in FOLDERS.items()}


def test_unet_matches_diffusers(pipes, golden, variant):
    pipe = pipes[variant]
    eps = unet_apply(
        pipe.unet,
        pipe.unet_params,
        golden["inputs.latents"],
        golden["inputs.timesteps"],
        golden["inputs.context"],
    )
    assert eps.dtype == jnp.float32 and eps.shape == golden["inputs.latents"].shape
    np.testing.assert_allclose(eps, golden[f"{variant}.unet_eps"], rtol=0, atol=ATOL)


def test_vae_matches_diffusers(pipes, golden, variant):
    pipe = pipes[variant]
    mean, logvar = vae_encode(pipe.vae, pipe.vae_params, golden["inputs.images"])
    np.testing.assert_allclose(mean, golden[f"{variant}.vae_mean"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(logvar, golden[f"{variant}.vae_logvar"], rtol=0, atol=ATOL)
    decoded = vae_decode(pipe.vae, pipe.vae_params, golden["inputs.latents"])
    np.testing.assert_allclose(decoded, golden[f"{variant}.vae_decoded"], rtol=0, atol=ATOL)


def test_decode_latents_divides_by_scaling_factor(pipes, golden):
    pipe = pipes["sd1"]
    s = pipe.vae_config["scaling_factor"]
    images = decode_latents(pipe.vae, pipe.vae_params, s * golden["inputs.latents"], s)
    np.testing.assert_allclose(images, golden["sd1.vae_decoded"], rtol=0, atol=ATOL)


def test_tokenizer_matches_transformers(pipes, golden, variant):
    ids = tokenize(pipes[variant].tokenizer, [str(p) for p in golden["prompts"]])
    assert ids.shape == (2, 77) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids, golden[f"{variant}.token_ids"])


def test_tokenizer_truncates_to_77(pipes):
    ids = tokenize(pipes["sd1"].tokenizer, ["cat " * 200])
    vocab_size = pipes["sd1"].text_encoder.vocab_size
    assert ids.shape == (1, 77)
    assert ids[0, 0] == vocab_size - 2 and ids[0, -1] == vocab_size - 1  # bos ... eos


def test_clip_matches_transformers(pipes, golden, variant):
    pipe = pipes[variant]
    ids = golden[f"{variant}.token_ids"]
    hidden, pooled = pipe.text_encoder.apply({"params": pipe.text_encoder_params}, ids)
    np.testing.assert_allclose(hidden, golden[f"{variant}.text_hidden"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(pooled, golden[f"{variant}.text_pooled"], rtol=0, atol=ATOL)
    penultimate = clip_encode(pipe.text_encoder, pipe.text_encoder_params, ids, skip_layers=1)
    np.testing.assert_allclose(
        penultimate, golden[f"{variant}.text_penultimate"], rtol=0, atol=ATOL
    )


def test_timestep_embedding_layout():
    emb = timestep_embedding(jnp.array([0.0, 10.0]), 8, flip_sin_to_cos=True, freq_shift=0)
    # flip_sin_to_cos puts cos first: at t=0, cos=1 and sin=0.
    np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])
    assert emb.shape == (2, 8)


def test_init_params_matches_abstract_shapes():
    unet = unet_from_config(SMALL_UNET)
    params = init_params(unet, jax.random.key(0))
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), params)
    assert shapes == jax.tree.map(lambda a: (a.shape, a.dtype), abstract_params(unet))
    kernel = params["conv_in"]["kernel"]
    assert 0.05 < float(jnp.std(kernel)) < 0.5  # lecun_normal for fan_in = 3*3*4


def test_real_sd_configs_have_published_parameter_counts():
    """Full-size SD 1.5 / 2.1 / VAE / CLIP-L trees (shapes only) match the real checkpoints."""
    count = lambda m: sum(math.prod(a.shape) for a in jax.tree.leaves(abstract_params(m)))
    assert count(unet_from_config({"cross_attention_dim": 768})) == 859_520_964
    sd21 = {"cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20]}
    assert count(unet_from_config({**sd21, "use_linear_projection": True})) == 865_910_724
    vae = {
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    }
    assert count(vae_from_config(vae)) == 83_653_863
    clip = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12}
    assert count(clip_from_config(clip)) == 123_060_480


def small_unet_loss(remat: str, batch: int, size: int):
    """(loss of latents under a SMALL_UNET with `remat`, random latents [batch,size,size,4])."""
    z = jax.random.normal(jax.random.key(1), (batch, size, size, 4))
    ctx = jax.random.normal(jax.random.key(2), (batch, 3, 8))
    params = init_params(unet_from_config(SMALL_UNET), jax.random.key(0))
    unet = unet_from_config(SMALL_UNET, remat=remat)
    return lambda z: jnp.sum(unet_apply(unet, params, z, jnp.array([7]), ctx) ** 2), z


def test_unet_remat_gives_same_gradients():
    """Latent gradients (what guidance differentiates) are unchanged by rematerialisation."""

    def grad(remat: str):
        loss, z = small_unet_loss(remat, 1, 4)
        # One remat per resnet and transformer: "decoder" has the up blocks' 3 + 3 (UpBlock2D:
        # 2 resnets; CrossAttnUpBlock2D: 2 resnets + 2 transformers); "all" adds the down
        # blocks' 3 and the mid block's 3.
        expected = {"none": 0, "decoder": 6, "all": 12}[remat.partition(":")[0]]
        assert str(jax.make_jaxpr(loss)(z)).count("remat") == expected
        return jax.jit(jax.grad(loss))(z)

    plain = grad("none")
    policies = ("decoder:dots_saveable", "all:dots_with_no_batch_dims_saveable")
    for remat in ("decoder", "all", *policies):
        np.testing.assert_allclose(grad(remat), plain, rtol=1e-5, atol=1e-6)


def test_remat_policies_trade_flops_for_memory():
    """'dots_saveable' keeps the matmul outputs: fewer recomputed FLOPs than the default."""

    def compiled(remat: str):
        loss, z = small_unet_loss(remat, 2, 8)
        return jax.jit(jax.grad(loss)).lower(z).compile()

    flops = {r: compiled(r).cost_analysis()["flops"] for r in ("none", "all", "all:dots_saveable")}
    assert flops["none"] < flops["all:dots_saveable"] < flops["all"]
    with pytest.raises(ValueError, match=r"remat='all:dots'.*dots_saveable"):
        unet_from_config(SMALL_UNET, remat="all:dots")


def test_vae_decoder_remat_gives_same_gradients():
    """Parameter and latent gradients are unchanged by rematerialising the decoder."""
    z = jax.random.normal(jax.random.key(1), (1, 2, 2, 4))
    params = init_params(vae_from_config(SMALL_VAE), jax.random.key(0))

    def grad(remat: str):
        vae = vae_from_config(SMALL_VAE, remat=remat)
        loss = lambda p, z: jnp.sum(vae_decode(vae, p, z) ** 2)
        # "decoder": mid block (2 resnets, attention), 2 up blocks x 2 resnets, output tail.
        expected = {"none": 0, "decoder": 8}[remat]
        assert str(jax.make_jaxpr(loss)(params, z)).count("remat") == expected
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, z)

    plain, remat = grad("none"), grad("decoder")  # parameter and latent gradients
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat), strict=True):
        # Recomputation reorders f32 sums: tolerance relative to each gradient's scale.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(a).max()))


def test_bf16_compute_runs_close_to_f32():
    z = jax.random.normal(jax.random.key(1), (2, 4, 4, 4))
    ctx = jax.random.normal(jax.random.key(2), (2, 3, 8))
    params = init_params(unet_from_config(SMALL_UNET), jax.random.key(0))
    eps = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        unet = unet_from_config(SMALL_UNET, dtype=dtype)
        eps[dtype] = jax.jit(lambda p, z, u=unet: unet_apply(u, p, z, 5, ctx))(params, z)
    assert eps[jnp.bfloat16].dtype == jnp.float32  # outputs stay f32 for the scheduler
    ref = float(jnp.max(jnp.abs(eps[jnp.float32])))
    assert float(jnp.max(jnp.abs(eps[jnp.bfloat16] - eps[jnp.float32]))) < 0.05 * ref
    vae_params = init_params(vae_from_config(SMALL_VAE), jax.random.key(0))
    vae = vae_from_config(SMALL_VAE, dtype=jnp.bfloat16)
    images = jax.jit(lambda p, z: vae_decode(vae, p, z))(vae_params, z[:, :2, :2])
    assert images.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(images)))


def test_unet_rejects_indivisible_latents(pipes):
    pipe = pipes["sd1"]
    with pytest.raises(ValueError, match="divisible by 4"):
        unet_apply(pipe.unet, pipe.unet_params, jnp.zeros((1, 6, 6, 4)), 1, jnp.zeros((1, 1, 16)))


def test_unsupported_config_names_file_and_options():
    bad = dict(SMALL_UNET, down_block_types=["SimpleCrossAttnDownBlock2D", "DownBlock2D"])
    with pytest.raises(ValueError, match=r"unet/config.json.*SimpleCross.*CrossAttnDownBlock2D"):
        unet_from_config(bad)
    with pytest.raises(ValueError, match="class_embed_type"):
        unet_from_config(dict(SMALL_UNET, class_embed_type="timestep"))
    with pytest.raises(ValueError, match="remat"):
        unet_from_config(SMALL_UNET, remat="encoder")


def test_class_embedder_context():
    embedder = class_embedder_from_config({"num_classes": 3, "embedding_dim": 8})
    params = init_params(embedder, jax.random.key(0))
    assert params["embedding"]["embedding"].shape == (4, 8)  # 3 classes + the null class
    ctx = class_context(embedder, params, jnp.array([0, 3]))
    assert ctx.shape == (2, 1, 8)
    np.testing.assert_array_equal(ctx[1, 0], params["embedding"]["embedding"][3])


@pytest.mark.slow
def test_live_against_torch(pipes):
    """Rebuild the torch models from the fixture folder and compare on fresh inputs."""
    pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.set_num_threads(1)
    pipe, folder = pipes["sd2"], FOLDERS["sd2"]
    rng = np.random.default_rng(123)
    z = rng.standard_normal((1, 8, 16, 4)).astype(np.float32)  # non-square on purpose
    ctx = rng.standard_normal((1, 5, 16)).astype(np.float32)
    ids = rng.integers(0, pipe.text_encoder.vocab_size - 1, (1, 9)).astype(np.int32)
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)
    f32 = torch.float32
    with torch.no_grad():
        load = dict(variant="fp16", torch_dtype=f32)
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", **load)
        ref = nhwc(unet(nchw(z), torch.tensor([500]), torch.from_numpy(ctx)).sample)
        vae = AutoencoderKL.from_pretrained(folder / "vae", **load)
        ref_img = nhwc(vae.decode(nchw(z)).sample)
        text = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=f32)
        ref_txt = text(torch.from_numpy(ids).long()).last_hidden_state.numpy()
    eps = unet_apply(pipe.unet, pipe.unet_params, z, jnp.array([500]), ctx)
    np.testing.assert_allclose(eps, ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(vae_decode(pipe.vae, pipe.vae_params, z), ref_img, atol=ATOL)
    hidden = clip_encode(pipe.text_encoder, pipe.text_encoder_params, ids)
    np.testing.assert_allclose(hidden, ref_txt, rtol=0, atol=ATOL)


def test_long_sequences_attend_in_query_blocks_with_the_same_result(monkeypatch):
    from ltg_jax.models import layers

    assert layers.query_chunk(9216, 9216) == 1536  # SD 2.1 at 768 px: 6 blocks
    assert layers.query_chunk(4096, 4096) == 4096  # SD 1.5 at 512 px: one block
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 96, 16)), jnp.float32) for _ in range(3))
    whole = layers.attention(q, k, v, num_heads=2)
    monkeypatch.setattr(layers, "MAX_LOGITS_PER_BLOCK", 96 * 40)  # blocks of 32 queries
    assert layers.query_chunk(96, 96) == 32
    blocked = layers.attention(q, k, v, num_heads=2)
    np.testing.assert_allclose(blocked, whole, rtol=1e-6, atol=1e-6)
    grad = lambda q: jax.grad(lambda q: jnp.sum(layers.attention(q, k, v, 2) ** 2))(q)
    monkeypatch.setattr(layers, "MAX_LOGITS_PER_BLOCK", 2**24)
    g_whole = grad(q)
    monkeypatch.setattr(layers, "MAX_LOGITS_PER_BLOCK", 96 * 40)
    np.testing.assert_allclose(grad(q), g_whole, rtol=1e-5, atol=1e-6)


def test_the_gradient_of_blocked_attention_holds_one_block_of_logits(monkeypatch):
    """Blocks are recomputed in the backward pass: its memory is bounded like the forward's."""
    from ltg_jax.models import layers

    q = jnp.zeros((1, 4096, 64), jnp.float32)
    loss = lambda q: jnp.sum(layers.attention(q, q, q, num_heads=1) ** 2)
    temp = lambda: jax.jit(jax.grad(loss)).lower(q).compile().memory_analysis().temp_size_in_bytes
    one_logits = 4096 * 4096 * 4  # bytes of the whole [4096, 4096] f32 logits (64 MiB)
    assert temp() > one_logits  # one block: the backward keeps the whole logits
    monkeypatch.setattr(layers, "MAX_LOGITS_PER_BLOCK", 4096 * 128)  # 32 blocks of 128 queries
    # Measured: 14 MiB; 140 MiB when the blocks are not recomputed (every block's logits kept).
    assert temp() < one_logits / 2
