"""ltg-jax: generative data mining with Longtail Guidance in JAX/Flax."""

__version__ = "0.1.0"
__all__ = ["LTGOutput", "LTGPipeline"]


def __getattr__(name: str):
    # Lazy: `import ltg_jax` stays light (configs and entrypoints import submodules only).
    if name in __all__:
        from ltg_jax import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ltg_jax' has no attribute {name!r}")
