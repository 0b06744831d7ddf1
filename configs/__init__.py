"""Configs (ml_collections), one file per setting; shipped as `ltg_jax.configs`."""
