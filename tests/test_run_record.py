"""The one "same run?" check shared by sampling, mining and the trainers."""

import ml_collections

from ltg_jax import run_record


def test_record_is_plain_json_and_differences_name_dotted_keys():
    config = ml_collections.ConfigDict({"a": {"b": (1, 2)}, "seed": 0, "batch_size": 8})
    saved = run_record.make(config, model_hash="m")
    assert saved == {"config": {"a": {"b": [1, 2]}, "seed": 0, "batch_size": 8}, "model_hash": "m"}
    config.seed, config.batch_size = 1, 16
    now = run_record.make(config, model_hash="n")
    assert run_record.differences(saved, now) == [
        "config.batch_size: 8 -> 16", "config.seed: 0 -> 1", "model_hash: 'm' -> 'n'",
    ]  # fmt: skip
    free = lambda k: k != "config.batch_size"
    assert run_record.differences(saved, now, keep=free)[0] == "config.seed: 0 -> 1"
    assert run_record.differences(saved, {**saved, "new": 1}) == ["new: None -> 1"]
