"""ltg-jax: generative data mining with Longtail Guidance in JAX/Flax."""

__version__ = "0.1.0"
