"""Where each piece of a TF-MOT-wrapped model sits in `tff.learning.models.ModelWeights`.

Built once from a wrapped Keras model, at process-construction time. Every
TFF piece (distributor, client work, aggregator, finalizer) uses it to find the
masked kernels, their masks, the dense ("unmasked") parameters and TF-MOT's
bookkeeping variables, and the static per-layer live counts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tff_feddst import models as models_lib


@dataclasses.dataclass(frozen=True)
class VarSpec:
  shape: tuple[int, ...]
  dtype: tf.DType


@dataclasses.dataclass(frozen=True)
class ModelLayout:
  """Static structure of the prunable model and its sparsity targets.

  Attributes:
    kernel_index: position of each masked kernel in `ModelWeights.trainable`.
    mask_index: position of its TF-MOT mask in `ModelWeights.non_trainable`.
    dense_trainable_index: trainable params without a mask (biases, BN, ...).
    dense_non_trainable_index: non-trainable params that are model state
      (e.g. BN moving statistics); averaged like the biases.
    bookkeeping_index: TF-MOT's `pruning_step` and `threshold` variables (and
      any other non-float state); never aggregated, reset on clients.
    kernel_shapes: shape of each masked kernel.
    live_counts: target number of live weights per masked kernel.
    output_positions: output positions each kernel is applied at per example
      (spatial size for convolutions, 1 for a Dense on vectors); for FLOPs.
  """
  kernel_index: tuple[int, ...]
  mask_index: tuple[int, ...]
  dense_trainable_index: tuple[int, ...]
  dense_non_trainable_index: tuple[int, ...]
  bookkeeping_index: tuple[int, ...]
  kernel_shapes: tuple[tuple[int, ...], ...]
  live_counts: tuple[int, ...]
  output_positions: tuple[int, ...]
  trainable_specs: tuple[VarSpec, ...]
  non_trainable_specs: tuple[VarSpec, ...]
  kernel_names: tuple[str, ...]

  @property
  def kernel_sizes(self) -> tuple[int, ...]:
    return tuple(int(np.prod(s)) for s in self.kernel_shapes)

  @property
  def num_kernels(self) -> int:
    return len(self.kernel_index)

  @property
  def dense_specs(self) -> tuple[VarSpec, ...]:
    return (tuple(self.trainable_specs[i] for i in self.dense_trainable_index)
            + tuple(self.non_trainable_specs[i]
                    for i in self.dense_non_trainable_index))

  def split(self, trainable, non_trainable):
    """(kernels, masks, dense params) from ModelWeights-ordered lists."""
    kernels = [trainable[i] for i in self.kernel_index]
    masks = [non_trainable[i] for i in self.mask_index]
    dense = ([trainable[i] for i in self.dense_trainable_index] +
             [non_trainable[i] for i in self.dense_non_trainable_index])
    return kernels, masks, dense

  def merge(self, kernels, masks, dense, bookkeeping=None):
    """Inverse of `split`; bookkeeping defaults to zeros (pruning_step = 0)."""
    trainable = [None] * len(self.trainable_specs)
    non_trainable = [None] * len(self.non_trainable_specs)
    for i, k in zip(self.kernel_index, kernels):
      trainable[i] = k
    for i, m in zip(self.mask_index, masks):
      non_trainable[i] = m
    n = len(self.dense_trainable_index)
    for i, d in zip(self.dense_trainable_index, dense[:n]):
      trainable[i] = d
    for i, d in zip(self.dense_non_trainable_index, dense[n:]):
      non_trainable[i] = d
    if bookkeeping is None:
      bookkeeping = [tf.zeros(self.non_trainable_specs[i].shape,
                              self.non_trainable_specs[i].dtype)
                     for i in self.bookkeeping_index]
    for i, b in zip(self.bookkeeping_index, bookkeeping):
      non_trainable[i] = b
    return trainable, non_trainable


def _index_of(variables, var) -> int:
  for i, v in enumerate(variables):
    if v is var:
      return i
  raise ValueError(f'Variable {var.name} is not among the model variables.')


def _output_positions(model: tf.keras.Model) -> list[int]:
  positions = []
  for wrapper in models_lib.prunable_wrappers(model):
    shape = wrapper.output_shape
    if isinstance(shape, list):
      shape = shape[0]
    inner = [d for d in shape[1:-1] if d is not None]
    n = int(np.prod(inner)) if inner else 1
    if isinstance(wrapper.layer, tf.keras.layers.Embedding):
      n = 0  # A lookup, not a multiply-add.
    positions.extend([n] * len(wrapper.pruning_vars))
  return positions


def build_layout(model: tf.keras.Model, sparsity: float,
                 distribution: str) -> ModelLayout:
  """Layout of a model already wrapped by `models.make_prunable`."""
  trainable = model.trainable_weights
  non_trainable = model.non_trainable_weights
  pairs = models_lib.masked_kernels(model)
  kernel_index = tuple(_index_of(trainable, p.kernel) for p in pairs)
  mask_index = tuple(_index_of(non_trainable, p.mask) for p in pairs)
  tfmot_vars = {_index_of(non_trainable, v)
                for v in models_lib.pruning_bookkeeping(model)}
  dense_trainable = tuple(i for i in range(len(trainable))
                          if i not in kernel_index)
  dense_non_trainable = tuple(
      i for i, v in enumerate(non_trainable)
      if i not in mask_index and i not in tfmot_vars and v.dtype.is_floating)
  bookkeeping_index = tuple(
      i for i in range(len(non_trainable))
      if i not in mask_index and i not in dense_non_trainable)
  def specs(vs):
    return tuple(VarSpec(tuple(v.shape.as_list()), v.dtype) for v in vs)
  return ModelLayout(
      kernel_index=kernel_index,
      mask_index=mask_index,
      dense_trainable_index=dense_trainable,
      dense_non_trainable_index=dense_non_trainable,
      bookkeeping_index=bookkeeping_index,
      kernel_shapes=tuple(tuple(p.kernel.shape.as_list()) for p in pairs),
      live_counts=tuple(models_lib.target_live_counts(model, sparsity,
                                                      distribution)),
      output_positions=tuple(_output_positions(model)),
      trainable_specs=specs(trainable),
      non_trainable_specs=specs(non_trainable),
      kernel_names=tuple(p.kernel.name for p in pairs),
  )
