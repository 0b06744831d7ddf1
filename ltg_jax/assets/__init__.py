"""The embedded default's shipped models: where they are and how they are sampled by default.

fashion_mnist_ldm/          diffusers-format class-conditional LDM (unet/, vae/,
                            class_embedder/, scheduler/), trained by train/vae.py + train/ldm.py
predictor_bundle.msgpack    the Fashion-MNIST-LT predictor + epistemic heads
oracle_bundle.msgpack       the oracle classifier (full balanced Fashion-MNIST)
fashion_mnist_tiny_decoder/ AutoencoderTiny distilled from the LDM's VAE by
                            train/tiny_decoder.py: the cheap guidance decoder
world/                      the ground-truth benchmark's models (ltg_jax/data/world.py):
  ldm/                      the LDM fine-tuned on the world (10% of each class on its side)
  predictor_bundle.msgpack  predictor + epistemic heads trained where that mode is 0.5%
  mode_oracle.msgpack       upright vs lying on its side
"""

from pathlib import Path

ASSETS = Path(__file__).parent
EMBEDDED_LDM = ASSETS / "fashion_mnist_ldm"
PREDICTOR_BUNDLE = ASSETS / "predictor_bundle.msgpack"
ORACLE_BUNDLE = ASSETS / "oracle_bundle.msgpack"
TINY_DECODER = ASSETS / "fashion_mnist_tiny_decoder"
WORLD = ASSETS / "world"
WORLD_LDM = WORLD / "ldm"
WORLD_PREDICTOR_BUNDLE = WORLD / "predictor_bundle.msgpack"
WORLD_MODE_ORACLE = WORLD / "mode_oracle.msgpack"
# The world's class oracle: the shipped oracle behind the mode oracle (ltg_jax.world_oracle).
WORLD_CLASS_ORACLE = "ltg_jax.world_oracle:class_oracle"
# The sampling defaults the shipped LDM's quality figures were measured at.
DEFAULT_NUM_STEPS = 25
DEFAULT_CFG_SCALE = 3.0
# The world LDM's unguided samples (configs/fidelity.py:world, 100 per class, Bag left out):
# CFG 3 keeps the class (0.956) but draws 0.9% on their side; CFG 1 draws 7.1% at 0.761; CFG 2
# (2.2% at 0.922) keeps the mode in reach and leaves guidance fidelity to spend above 0.85
# (CFG 1.5: 3.0% at 0.875).
WORLD_CFG_SCALE = 2.0
