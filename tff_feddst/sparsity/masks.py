"""Mask edits as plain TF functions: magnitude prune, gradient regrow, readjust.

Masks are float tensors of 0/1 with the kernel's shape (TF-MOT's convention).
Every function works per layer on flattened values, is deterministic (ties go
to the lower flat index), and is shared by the client (readjustment) and the
server (re-pruning the union of client masks).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


def _scatter_ones(indices, like):
  flat = tf.scatter_nd(tf.expand_dims(indices, 1),
                       tf.ones_like(indices, dtype=like.dtype),
                       tf.shape(tf.reshape(like, [-1]), out_type=indices.dtype))
  return tf.reshape(flat, tf.shape(like))


def _top_k_indices(scores, k):
  """Flat indices of the k largest scores; equal scores: lower index first."""
  return tf.math.top_k(tf.reshape(scores, [-1]), k=k, sorted=True).indices


def prune_by_magnitude(weights, mask, num_keep):
  """Mask keeping the `num_keep` largest |w| among the live weights.

  `num_keep` must not exceed the number of live weights. Equal magnitudes:
  the lower index is kept. Whichever of the kept or dropped set is smaller is
  selected with `top_k` (a FedDST readjustment drops only a few percent, and
  `top_k` with a large k is slow).
  """
  live = mask > 0
  num_keep = tf.cast(num_keep, tf.int32)
  num_drop = tf.cast(tf.reduce_sum(tf.cast(live, tf.int32)), tf.int32) - num_keep
  magnitude = tf.reshape(tf.abs(weights), [-1])
  flat_live = tf.reshape(live, [-1])

  def keep_largest():
    scores = tf.where(flat_live, magnitude, -tf.ones_like(magnitude))
    return _scatter_ones(_top_k_indices(scores, num_keep), mask)

  def drop_smallest():
    # On the reversed array top_k's "lower index first" drops the higher
    # original index first, so the kept set is the same as keep_largest's.
    scores = tf.where(flat_live, -magnitude,
                      tf.fill(tf.shape(magnitude), -float('inf')))
    n = tf.size(scores)
    dropped = n - 1 - _top_k_indices(tf.reverse(scores, [0]), num_drop)
    return tf.cast(mask > 0, mask.dtype) - _scatter_ones(dropped, mask)

  return tf.cond(num_keep <= num_drop, keep_largest, drop_smallest)


def regrow_by_gradient(grads, mask, num_grow, *, candidates=None):
  """Mask plus the `num_grow` dead weights with the largest |grad|.

  Args:
    grads: dense gradient of the loss with respect to the kernel.
    mask: current mask.
    num_grow: how many to revive; must not exceed the number of candidates.
    candidates: optional 0/1 tensor restricting which dead weights may grow
      (defaults to all dead weights).
  """
  dead = mask <= 0
  if candidates is not None:
    dead = tf.logical_and(dead, candidates > 0)
  scores = tf.where(dead, tf.abs(grads), -tf.ones_like(grads))
  grow = _top_k_indices(scores, tf.cast(num_grow, tf.int32))
  return mask + _scatter_ones(grow, mask)


class Readjustment(NamedTuple):
  mask: tf.Tensor      # the new mask, same number of live weights
  weights: tf.Tensor   # weights * new mask; regrown weights are exactly 0
  num_pruned: tf.Tensor  # == number regrown


def readjust(weights, grads, mask, fraction) -> Readjustment:
  """Prune floor(fraction * live) by |w|, regrow as many by |grad| (FedDST).

  Regrowth draws only from weights that were dead *before* this call, so the
  pruned and regrown sets are disjoint and the density is unchanged. Regrown
  weights start at 0 (RigL, FedDST).
  """
  num_live = tf.cast(tf.reduce_sum(mask), tf.int32)
  num_dead = tf.size(mask) - num_live
  k = tf.cast(tf.floor(tf.cast(fraction, tf.float32) *
                       tf.cast(num_live, tf.float32)), tf.int32)
  k = tf.minimum(k, num_dead)
  kept = prune_by_magnitude(weights, mask, num_live - k)
  new_mask = regrow_by_gradient(grads, kept, k, candidates=1.0 - mask)
  return Readjustment(new_mask, weights * kept, k)


def _sort_word_bits(key) -> int:
  """Bits a key takes in a packed sort word: 1 for bool, 31 for float32."""
  if key.dtype == tf.bool:
    return 1
  if key.dtype == tf.float32:
    return 31
  raise TypeError(f'lexicographic keys must be bool or float32, got {key.dtype}')


def _key_bits(key):
  """The key as int64 whose order is the key's: a non-negative float32's
  bit pattern grows with its value (negative values and -0.0 rank as 0; NaN
  above +inf)."""
  if key.dtype == tf.bool:
    return tf.cast(key, tf.int64)
  return tf.cast(tf.maximum(tf.bitcast(key, tf.int32), 0), tf.int64)


def keep_top_k_lexicographic(keys, k):
  """0/1 mask keeping the k positions that rank highest by `keys`.

  `keys` is a list of same-shaped bool or non-negative float32 tensors, most
  significant first; remaining ties go to the lower flat index. Keys are
  packed, least significant first, into as few int64 words as hold them (1
  bit per bool, 31 per float), and each word is stable-sorted once: FedDST's
  three keys take one sort instead of three. With a bool first key only its
  True positions are sorted when there are at least k of them (the server's
  union of client masks is barely larger than the live count), and none is
  when there are exactly k (the union when no client changed its mask).
  """
  flat = [tf.reshape(key, [-1]) for key in keys]
  like = tf.cast(keys[0], tf.float32)
  k = tf.cast(k, tf.int32)

  def all_sorted():
    return _scatter_ones(_lexicographic_order(flat)[:k], like)

  if keys[0].dtype != tf.bool:
    return all_sorted()

  def among_leaders():
    leaders = tf.cast(tf.where(flat[0])[:, 0], tf.int32)
    rest = [tf.gather(key, leaders) for key in flat[1:]]
    order = (_lexicographic_order(rest) if rest else
             tf.range(tf.size(leaders)))
    return _scatter_ones(tf.gather(leaders, order[:k]), like)

  count = tf.reduce_sum(tf.cast(flat[0], tf.int32))
  return tf.case([(tf.equal(count, k), lambda: like),
                  (count > k, among_leaders)],
                 default=all_sorted, exclusive=False)


def _lexicographic_order(flat_keys):
  """Flat indices by `flat_keys` (most significant first) descending, ties
  to the lower index: stable sorts of packed key words."""
  words, word, used = [], None, 0
  for key in reversed(flat_keys):
    bits = _sort_word_bits(key)
    if word is not None and used + bits > 63:
      words.append(word)
      word, used = None, 0
    shifted = tf.bitwise.left_shift(_key_bits(key), tf.constant(used, tf.int64))
    word = shifted if word is None else word + shifted
    used += bits
  words.append(word)
  order = tf.range(tf.size(flat_keys[0]))
  for word in words:  # Least significant first.
    order = tf.gather(order, tf.argsort(tf.gather(word, order),
                                        direction='DESCENDING', stable=True))
  return order


def hamming_distance(mask_a, mask_b):
  """Number of positions where two 0/1 masks differ."""
  return tf.reduce_sum(tf.cast(tf.not_equal(mask_a > 0, mask_b > 0), tf.int64))
