"""Keras models whose prunable kernels carry TF-MOT masks that only we edit.

`make_prunable` wraps every layer that TF-MOT's registry can prune with
`tfmot.sparsity.keras.prune_low_magnitude`, so each mask lives in TF-MOT's own
non-trainable `mask` variable and the usual TF-MOT tooling (strip_pruning,
`prune_scope`, TFLite sparsity) applies. TF-MOT's own schedule is switched off
(`NeverPrune`); masks change only through `set_masks`, i.e. through FedDST.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tff_feddst import sparsity as sparsity_lib

PruneLowMagnitude = pruning_wrapper.PruneLowMagnitude
_Registry = prune_registry.PruneRegistry


class NeverPrune(tfmot.sparsity.keras.PruningSchedule):
  """A TF-MOT schedule whose pruning step never comes: masks are ours."""

  def __call__(self, step):
    return tf.constant(False), tf.constant(0.0)

  def get_config(self):
    return {'class_name': self.__class__.__name__, 'config': {}}


def _is_prunable(layer: tf.keras.layers.Layer) -> bool:
  if isinstance(layer, prunable_layer.PrunableLayer):
    return True
  if not _Registry.supports(layer):
    return False
  if _Registry._is_rnn_layer(layer) or _Registry._is_mha_layer(layer):  # pylint: disable=protected-access
    return True
  return bool(_Registry._weight_names(layer))  # pylint: disable=protected-access


def _check_model(model) -> None:
  if not isinstance(model, tf.keras.Model):
    raise TypeError(f'Expected a tf.keras.Model, got {type(model).__name__}.')
  if not (isinstance(model, tf.keras.Sequential) or
          getattr(model, '_is_graph_network', False)):
    raise TypeError(
        f'{type(model).__name__} is a subclassed Keras model, which TF-MOT '
        'cannot wrap. Build it as a tf.keras.Sequential or functional model '
        '(tf.keras.Model(inputs, outputs)) instead.')


def make_prunable(model: tf.keras.Model, *, log: bool = True) -> tf.keras.Model:
  """Wraps each TF-MOT-prunable layer; other layers stay dense (logged once).

  The wrapped model shares its layers' variables with `model`. Its
  `pruning_step` variables are set to 0 so that training works without
  TF-MOT's `UpdatePruningStep` callback.
  """
  _check_model(model)
  dense_layers = []

  def wrap(layer):
    if isinstance(layer, tf.keras.layers.InputLayer):
      return layer.__class__.from_config(layer.get_config())
    if _is_prunable(layer):
      return tfmot.sparsity.keras.prune_low_magnitude(
          layer, pruning_schedule=NeverPrune())
    if layer.weights:
      dense_layers.append(f'{layer.name} ({type(layer).__name__})')
    return layer

  wrapped = tf.keras.models.clone_model(model, clone_function=wrap)
  if not prunable_wrappers(wrapped):
    raise ValueError(
        f'Model {model.name!r} has no layer that TF-MOT can prune (Dense, '
        'Conv*, Embedding, ...); there is nothing to sparsify.')
  if dense_layers and log:
    logging.info('Layers kept dense (TF-MOT does not prune them): %s',
                 ', '.join(dense_layers))
  for wrapper in prunable_wrappers(wrapped):
    wrapper.pruning_step.assign(0)
  return wrapped


def prunable_wrappers(model: tf.keras.Model) -> list[PruneLowMagnitude]:
  return [l for l in model.layers if isinstance(l, PruneLowMagnitude)]


class MaskedKernel(NamedTuple):
  kernel: tf.Variable
  mask: tf.Variable


def masked_kernels(model: tf.keras.Model) -> list[MaskedKernel]:
  """(kernel, mask) variable pairs in layer order."""
  return [MaskedKernel(w, m) for wrapper in prunable_wrappers(model)
          for w, m, _ in wrapper.pruning_vars]


def pruning_bookkeeping(model: tf.keras.Model) -> list[tf.Variable]:
  """TF-MOT's non-trainable variables that are not model parameters."""
  out = []
  for wrapper in prunable_wrappers(model):
    out.append(wrapper.pruning_step)
    out.extend(t for _, _, t in wrapper.pruning_vars)
  return out


def kernel_shapes(model: tf.keras.Model) -> list[tuple[int, ...]]:
  return [tuple(p.kernel.shape.as_list()) for p in masked_kernels(model)]


def get_masks(model: tf.keras.Model) -> list[np.ndarray]:
  return [p.mask.numpy() for p in masked_kernels(model)]


def set_masks(model: tf.keras.Model, masks: Sequence[np.ndarray]) -> None:
  """Writes the masks and zeros the kernel entries they mask out."""
  pairs = masked_kernels(model)
  if len(masks) != len(pairs):
    raise ValueError(f'Expected {len(pairs)} masks, got {len(masks)}.')
  for pair, mask in zip(pairs, masks):
    mask = np.asarray(mask, dtype=pair.mask.dtype.as_numpy_dtype)
    if mask.shape != tuple(pair.mask.shape):
      raise ValueError(f'Mask for {pair.kernel.name} has shape {mask.shape}, '
                       f'expected {tuple(pair.mask.shape)}.')
    pair.mask.assign(mask)
    pair.kernel.assign(pair.kernel * mask)


def bias_sizes(model: tf.keras.Model) -> list[int]:
  """Size of each wrapped layer's unmasked trainable params, per masked kernel.

  The FedDST reference counts these in its layer sizes (`feddst_erk`). A layer
  with several masked kernels attributes its unmasked params to the first.
  """
  sizes = []
  for wrapper in prunable_wrappers(model):
    masked = {w.ref() for w, _, _ in wrapper.pruning_vars}
    other = sum(int(np.prod(v.shape)) for v in wrapper.trainable_weights
                if v.ref() not in masked)
    sizes.extend([other] + [0] * (len(wrapper.pruning_vars) - 1))
  return sizes


def target_live_counts(model: tf.keras.Model, sparsity: float,
                       distribution: str) -> list[int]:
  return sparsity_lib.layer_live_counts(
      kernel_shapes(model), sparsity, distribution,
      bias_sizes=bias_sizes(model))


def apply_initial_masks(model: tf.keras.Model, sparsity: float,
                        distribution: str = 'feddst_erk') -> list[int]:
  """Magnitude-prunes the current (random init) kernels to the layer densities.

  Returns the live count per masked kernel.
  """
  counts = target_live_counts(model, sparsity, distribution)
  masks = [sparsity_lib.prune_by_magnitude(p.kernel, tf.ones_like(p.mask), n)
           for p, n in zip(masked_kernels(model), counts)]
  set_masks(model, [m.numpy() for m in masks])
  return counts


def strip(model: tf.keras.Model) -> tf.keras.Model:
  """A plain Keras model (no TF-MOT wrappers) holding kernel * mask.

  The result owns its variables: later training of `model` does not change it.
  """
  for pair in masked_kernels(model):
    pair.kernel.assign(pair.kernel * pair.mask)
  stripped = tfmot.sparsity.keras.strip_pruning(model)
  plain = tf.keras.models.clone_model(stripped)
  plain.set_weights(stripped.get_weights())
  return plain
