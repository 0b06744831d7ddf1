"""Thin training entry points (absl apps): the logic lives in `ltg_jax`."""
