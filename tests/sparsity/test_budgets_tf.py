"""The budget rule runs apply (`sparsity.budgets_tf`) gives the numpy model's
sub-masks and counts (`sparsity.budgets`, itself checked against brute force
in test_budgets.py), in a graph as the clients run it and eagerly."""

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst.sparsity import budgets
from tff_feddst.sparsity import budgets_tf

SHAPES = [(3, 4), (5,), (2, 2, 3), (7,)]


def case(seed):
  """Random kernels with ties, masks with a one-weight and an empty layer."""
  rng = np.random.default_rng(seed)
  # Few distinct magnitudes (and signs): many ties.
  kernels = [(rng.integers(-3, 4, size=s) * 0.25).astype(np.float32)
             for s in SHAPES]
  masks = [(rng.random(s) < rng.uniform(0.2, 0.9)).astype(np.float32)
           for s in SHAPES]
  masks[1][:] = 0
  masks[1][rng.integers(5)] = 1  # One live weight: the k = 1 floor.
  if seed % 2:
    masks[3][:] = 0  # No live weight: k = 0.
  return kernels, masks


def run_tf(kernels, masks, budget, graph):
  fn = budgets_tf.budget_masks
  if graph:
    fn = tf.function(fn)
  subs, counts = fn([tf.constant(k) for k in kernels],
                    [tf.constant(m) for m in masks],
                    tf.constant(budget, tf.float32))
  return [s.numpy() for s in subs], [int(c) for c in counts]


@pytest.mark.parametrize('graph', [False, True])
@pytest.mark.parametrize('seed', range(6))
def test_tf_rule_equals_numpy_model(seed, graph):
  kernels, masks = case(seed)
  live = [int(m.sum()) for m in masks]
  for budget in (0.001, 0.05, 0.1, 0.3, 0.5, 1.0):
    want_counts = budgets.layer_counts(live, [m.size for m in masks], budget)
    want = budgets.budget_masks(kernels, masks, budget)
    subs, counts = run_tf(kernels, masks, budget, graph)
    assert counts == [int(k) for k in want_counts]
    for got, expected in zip(subs, want):
      assert got.dtype == np.float32
      np.testing.assert_array_equal(got, expected)
  assert budgets.layer_counts(live, [m.size for m in masks], 0.001)[1] == 1


def test_all_dead_masks_keep_nothing():
  kernels, masks = case(1)
  masks = [np.zeros_like(m) for m in masks]
  subs, counts = run_tf(kernels, masks, 0.5, graph=False)
  assert counts == [0] * len(SHAPES)
  assert all(not s.any() for s in subs)
