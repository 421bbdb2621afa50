"""The sparse payload that crosses a placement boundary, and its byte count.

A `SparsePayload` holds, per masked kernel, the live values in flat
(row-major) order and the mask packed 8 bits per byte — or an empty mask when
the receiver already knows it (a client whose mask equals the global one it
received) — plus the unmasked parameters dense. Values may travel in 16 bits
(`dtype=tf.bfloat16` or `tf.float16`); receivers compute in float32. Bytes are
counted from these tensors themselves, so the measurement is of what is
actually sent; this module is the only place that counts them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from tff_feddst import choices

_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)
UPLOAD_DTYPES = {name: tf.as_dtype(name) for name in choices.UPLOAD_DTYPES}


class SparsePayload(NamedTuple):
  """Live values per kernel, packed masks (uint8, maybe empty), dense params."""
  values: list[Any]
  masks: list[Any]
  dense: list[Any]


class ImportanceUpload(NamedTuple):
  """A PruneFL client's upload: the sparse payload, (Σ_steps g)² per kernel
  weight (flat, float32) and its sum over the dense params (shape [1])."""
  payload: SparsePayload
  importance: list[Any]
  base_importance: Any


def upload_dtype(name: str) -> tf.DType:
  """The TF dtype named `name` ('float32', 'bfloat16', 'float16')."""
  if name not in UPLOAD_DTYPES:
    raise ValueError(f'upload_dtype must be one of {sorted(UPLOAD_DTYPES)}, '
                     f'got {name!r}.')
  return UPLOAD_DTYPES[name]


def pack_bits(mask) -> tf.Tensor:
  """0/1 mask of any shape -> uint8[ceil(N / 8)], most significant bit first."""
  bits = tf.cast(tf.reshape(mask, [-1]) > 0, tf.int32)
  pad = tf.math.floormod(-tf.size(bits), 8)
  bits = tf.reshape(tf.pad(bits, [[0, pad]]), [-1, 8])
  return tf.cast(tf.reduce_sum(bits * tf.constant(_BIT_WEIGHTS), axis=1), tf.uint8)


def unpack_bits(packed, size: int) -> tf.Tensor:
  """uint8[ceil(size / 8)] -> bool[size]."""
  shifts = tf.constant([7, 6, 5, 4, 3, 2, 1, 0], tf.int32)
  bits = tf.bitwise.bitwise_and(
      tf.bitwise.right_shift(tf.cast(packed, tf.int32)[:, None], shifts), 1)
  return tf.reshape(bits, [-1])[:size] > 0


def encode(kernels, masks, dense, *, send_masks,
           dtype: tf.DType = tf.float32) -> SparsePayload:
  """Payload with live values, packed masks (or empty ones), dense params.

  `send_masks` is a bool (Python or scalar tensor); when False the masks are
  sent as empty uint8[0] tensors. Floating values and params are sent as
  `dtype`.
  """
  def cast(t):
    t = tf.convert_to_tensor(t)
    return tf.cast(t, dtype) if t.dtype.is_floating else t

  values = [cast(tf.boolean_mask(tf.reshape(k, [-1]), tf.reshape(m, [-1]) > 0))
            for k, m in zip(kernels, masks)]
  empty = tf.zeros([0], tf.uint8)
  packed = [tf.cond(tf.convert_to_tensor(send_masks),
                    lambda m=m: pack_bits(m), lambda: empty) for m in masks]
  return SparsePayload(values=values, masks=packed,
                       dense=[cast(d) for d in dense])


def decode_mask(packed, shape) -> tf.Tensor:
  size = 1
  for d in shape:
    size *= d
  return tf.reshape(tf.cast(unpack_bits(packed, size), tf.float32), shape)


def scatter_values(values, mask) -> tf.Tensor:
  """Dense float32 kernel with `values` at the live positions of `mask`."""
  flat = tf.reshape(mask, [-1]) > 0
  idx = tf.where(flat)
  dense = tf.scatter_nd(idx, tf.cast(values, tf.float32),
                        tf.shape(flat, out_type=tf.int64))
  return tf.reshape(dense, tf.shape(mask))


def payload_bytes(payload) -> tf.Tensor:
  """int64 number of bytes of all tensors in the payload."""
  total = tf.constant(0, tf.int64)
  for t in tf.nest.flatten(payload):
    total += tf.cast(tf.size(t), tf.int64) * t.dtype.size
  return total
