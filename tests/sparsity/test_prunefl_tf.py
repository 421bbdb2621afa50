"""The server's TensorFlow copy of PruneFL's rule gives the numpy rule's masks
(`sparsity.prunefl`, itself checked against brute force)."""

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst.sparsity import prunefl
from tff_feddst.sparsity import prunefl_tf


def case(seed):
  rng = np.random.default_rng(seed)
  shapes = [(3, 4), (5,), (2, 2, 3)]
  weights = [rng.normal(size=s).astype(np.float32) for s in shapes]
  masks = [rng.random(s) < 0.5 for s in shapes]
  importance = [rng.exponential(size=s).astype(np.float32) for s in shapes]
  importance[1][rng.random(5) < 0.4] = 0.0  # Zero-importance candidates.
  times = list(rng.uniform(0.2, 2.0, size=len(shapes)))
  return weights, masks, importance, times, float(rng.uniform(0.5, 3.0))


@pytest.mark.parametrize('seed', range(8))
def test_tf_rule_equals_numpy_rule(seed):
  weights, masks, importance, times, base = case(seed)
  for max_decrease in (0.0, 0.3, 0.6):
    for cap in (None, 6, 0):
      want = prunefl.reconfigure(
          weights, masks, [s.astype(np.float64) for s in importance], times,
          base_time=base, max_decrease=max_decrease, base_importance=0.5,
          max_live=cap)
      got = prunefl_tf.reconfigure(
          [tf.constant(w) for w in weights],
          [tf.constant(m.astype(np.float32)) for m in masks],
          [tf.constant(s) for s in importance],
          [tf.constant(t, tf.float64) for t in times], base_time=base,
          max_decrease=max_decrease, base_importance=0.5, max_live=cap)
      for w, g in zip(want, got):
        np.testing.assert_array_equal(g.numpy() > 0, w)
        assert g.dtype == tf.float32


def test_tf_core_equals_numpy_core_and_empty_layer():
  weights, masks, _, _, _ = case(3)
  masks[1][:] = False  # A layer with no live weight has no core.
  for w, m in zip(weights, masks):
    np.testing.assert_array_equal(
        prunefl_tf.protected_core(tf.constant(w), tf.constant(
            m.astype(np.float32)), 0.3).numpy(),
        prunefl.protected_core(w, m, 0.3))


def test_reconfiguration_round_in_tf():
  assert [r for r in range(12) if bool(
      prunefl_tf.is_reconfiguration_round(tf.constant(r, tf.int64), 4))] == [
          r for r in range(12) if prunefl.is_reconfiguration_round(r, 4)]
