"""Thin sampling entrypoints: LTG datasets (sample.ltg) and unguided grids (sample.grid)."""
