"""A user's own predictor, not ours: a small ResNet with batch norm in inference mode.

Loaded by import path (`user_predictor:make`, with tests/user_code on PYTHONPATH) the way a
user plugs their classifier into LTGPipeline or `--config.predictor`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

CLASS_NAMES = ("bird", "cat", "dog", "fish")  # sorted, as an image folder orders them


class Block(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.width, (3, 3))(x)
        h = nn.relu(nn.BatchNorm(use_running_average=True)(h))
        h = nn.Conv(self.width, (3, 3))(h)
        h = nn.BatchNorm(use_running_average=True)(h)
        skip = nn.Conv(self.width, (1, 1))(x) if x.shape[-1] != self.width else x
        return nn.relu(h + skip)


class TinyResNet(nn.Module):
    @nn.compact
    def __call__(self, images):
        x = Block(8)(images)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = Block(16)(x)
        features = jnp.mean(x, axis=(1, 2))
        return features, nn.Dense(len(CLASS_NAMES))(features)


def make():
    """(apply, params, class names, input adapter): 20x20 RGB, ImageNet-normalised [0, 1]."""
    model = TinyResNet()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 20, 20, 3)))
    # Non-trivial running statistics, as a trained network has.
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: v + 0.1 if "batch_stats" in jax.tree_util.keystr(path) else v, variables
    )

    def apply(params, images):
        return model.apply(params, images)  # inference: running averages, nothing mutable

    adapter = {"size": (20, 20), "channels": 3, "range": "[0,1]", "normalise": "imagenet"}
    return apply, variables, CLASS_NAMES, adapter
