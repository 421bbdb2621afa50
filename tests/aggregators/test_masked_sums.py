"""The masked sums against a numpy masked mean, for a round that mixes a
client keeping the global mask (no mask sent) with one that sent its own,
accumulated in one pass or merged from two partial sums in either order."""

import numpy as np
import tensorflow as tf

from tff_feddst.aggregators import masked_mean
from tff_feddst.sparse import codec
from tff_feddst.sparse.layout import ModelLayout
from tff_feddst.sparse.layout import VarSpec

SHAPE = (4, 3)
LAYOUT = ModelLayout(
    kernel_index=(0,), mask_index=(0,), dense_trainable_index=(1,),
    dense_non_trainable_index=(), bookkeeping_index=(), kernel_shapes=(SHAPE,),
    live_counts=(5,), output_positions=(1,),
    trainable_specs=(VarSpec(SHAPE, tf.float32), VarSpec((3,), tf.float32)),
    non_trainable_specs=(VarSpec(SHAPE, tf.float32),), kernel_names=('k',))
GLOBAL = np.zeros(SHAPE, np.float32)
GLOBAL.flat[[0, 2, 4, 6, 8]] = 1.0
OWN = np.zeros(SHAPE, np.float32)
OWN.flat[[0, 1, 4, 7, 11]] = 1.0  # Readjusted: shares 0 and 4 with GLOBAL.
RNG = np.random.default_rng(0)
KEEPER = (RNG.normal(size=SHAPE).astype(np.float32) * GLOBAL, 3.0)
MOVER = (RNG.normal(size=SHAPE).astype(np.float32) * OWN, 5.0)
DENSE = [RNG.normal(size=3).astype(np.float32) for _ in range(2)]


def _payload(kernel, mask, dense, send_mask):
  return codec.encode([kernel], [mask], [dense], send_masks=send_mask)


def _numpy_mean():
  (k1, w1), (k2, w2) = KEEPER, MOVER
  weight = w1 * GLOBAL + w2 * OWN
  total = w1 * k1 + w2 * k2
  kernel = np.divide(total, weight, out=np.zeros(SHAPE, np.float32),
                     where=weight > 0)
  return kernel, weight, GLOBAL + OWN, (w1 * DENSE[0] + w2 * DENSE[1]) / 8.0


def _check(sums):
  means, weights, counts, dense = masked_mean.masked_mean(
      LAYOUT, sums, [tf.constant(GLOBAL)])
  kernel, weight, count, dense_mean = _numpy_mean()
  np.testing.assert_allclose(means[0], kernel, rtol=1e-6)
  np.testing.assert_allclose(weights[0], weight)
  np.testing.assert_allclose(counts[0], count)
  np.testing.assert_allclose(dense[0], dense_mean, rtol=1e-6)


def test_sums_stay_empty_until_a_client_sends_a_mask():
  zero = masked_mean.zero_sums(LAYOUT)
  keeper = masked_mean.accumulate(
      LAYOUT, zero, _payload(KEEPER[0], GLOBAL, DENSE[0], False), KEEPER[1])
  for sums in (zero, keeper):
    assert [int(tf.size(t)) for t in
            sums.kernel_sums + sums.vote_weights + sums.vote_counts] == [0] * 3
  both = masked_mean.accumulate(
      LAYOUT, keeper, _payload(MOVER[0], OWN, DENSE[1], True), MOVER[1])
  assert [int(tf.size(t)) for t in both.kernel_sums] == [12]
  _check(both)


def test_partial_sums_merge_in_either_order():
  zero = masked_mean.zero_sums(LAYOUT)
  keeper = masked_mean.accumulate(
      LAYOUT, zero, _payload(KEEPER[0], GLOBAL, DENSE[0], False), KEEPER[1])
  mover = masked_mean.accumulate(
      LAYOUT, zero, _payload(MOVER[0], OWN, DENSE[1], True), MOVER[1])
  _check(masked_mean.merge(keeper, mover))
  _check(masked_mean.merge(mover, keeper))
  _check(masked_mean.merge(masked_mean.merge(zero, mover), keeper))
