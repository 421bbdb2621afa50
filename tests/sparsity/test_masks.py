"""Prune, regrow, readjust and schedules against an independent numpy reference."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst import sparsity

SHAPES = [(7,), (5, 5, 1, 10), (64, 16), (3, 3, 8, 4), (300, 10)]
LEVELS = [0.0, 0.5, 0.8, 0.95, 0.99]


def np_top(scores, candidates, k):
  """Indices of the k largest scores among candidates; ties -> lower index."""
  idx = np.flatnonzero(candidates)
  order = np.lexsort((idx, -scores[idx]))  # last key is primary
  return idx[order[:k]]


def random_case(shape, s, seed):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=shape).astype(np.float32)
  g = rng.normal(size=shape).astype(np.float32)
  n = w.size
  live = max(1, int(round((1 - s) * n)))
  mask = np.zeros(n, np.float32)
  mask[rng.choice(n, live, replace=False)] = 1
  mask = mask.reshape(shape)
  return w * mask, g, mask


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('s', LEVELS)
def test_prune_keeps_largest_live(shape, s):
  w, _, mask = random_case(shape, s, 0)
  live = int(mask.sum())
  k = live // 2
  got = sparsity.prune_by_magnitude(w, mask, k).numpy()
  expected = np.zeros(w.size, np.float32)
  expected[np_top(np.abs(w).ravel(), mask.ravel() > 0, k)] = 1
  np.testing.assert_array_equal(got.ravel(), expected)
  assert got.sum() == k
  # Every pruned live weight is no larger than every kept one.
  pruned = (mask > 0) & (got == 0)
  if pruned.any() and k:
    assert np.abs(w[pruned]).max() <= np.abs(w[got > 0]).min()


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('s', LEVELS)
def test_regrow_takes_largest_dead_gradients(shape, s):
  _, g, mask = random_case(shape, s, 1)
  dead = int(mask.size - mask.sum())
  k = dead // 3
  got = sparsity.regrow_by_gradient(g, mask, k).numpy()
  grown = np.flatnonzero((got.ravel() > 0) & (mask.ravel() == 0))
  np.testing.assert_array_equal(
      np.sort(grown), np.sort(np_top(np.abs(g).ravel(), mask.ravel() == 0, k)))
  assert np.all(got.ravel()[mask.ravel() > 0] == 1)  # live stay live
  assert got.sum() == mask.sum() + k


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('s', LEVELS)
@pytest.mark.parametrize('fraction', [0.0, 0.05, 0.3, 1.0])
def test_readjust_against_numpy(shape, s, fraction):
  w, g, mask = random_case(shape, s, 2)
  live = int(mask.sum())
  dead = mask.size - live
  k = min(int(math.floor(np.float32(fraction) * np.float32(live))), dead)
  keep = np_top(np.abs(w).ravel(), mask.ravel() > 0, live - k)
  grow = np_top(np.abs(g).ravel(), mask.ravel() == 0, k)
  expected = np.zeros(mask.size, np.float32)
  expected[keep] = 1
  expected[grow] = 1

  result = sparsity.readjust(w, g, mask, fraction)
  new_mask = result.mask.numpy().ravel()
  np.testing.assert_array_equal(new_mask, expected)
  assert int(result.num_pruned) == k
  assert new_mask.sum() == live                      # density unchanged
  pruned = set(np.flatnonzero((mask.ravel() > 0) & (new_mask == 0)))
  grown = set(np.flatnonzero((mask.ravel() == 0) & (new_mask > 0)))
  assert pruned.isdisjoint(grown) and len(pruned) == len(grown) == k
  new_w = result.weights.numpy().ravel()
  assert np.all(new_w[list(grown)] == 0)             # regrown start at 0
  assert np.all(new_w[new_mask == 0] == 0)
  kept = (mask.ravel() > 0) & (new_mask > 0)
  np.testing.assert_array_equal(new_w[kept], w.ravel()[kept])


def test_ties_go_to_lower_index():
  w = np.array([1.0, 2.0, 2.0, 2.0, 0.5], np.float32)
  got = sparsity.prune_by_magnitude(w, np.ones(5, np.float32), 2).numpy()
  np.testing.assert_array_equal(got, [0, 1, 1, 0, 0])
  # Keeping most weights selects the dropped set instead; same tie rule.
  got = sparsity.prune_by_magnitude(np.full(5, 2.0, np.float32),
                                    np.ones(5, np.float32), 3).numpy()
  np.testing.assert_array_equal(got, [1, 1, 1, 0, 0])
  got = sparsity.prune_by_magnitude(w, np.array([1, 1, 1, 1, 0], np.float32),
                                    3).numpy()
  np.testing.assert_array_equal(got, [0, 1, 1, 1, 0])
  g = np.zeros(5, np.float32)
  mask = np.array([1, 0, 0, 0, 0], np.float32)
  got = sparsity.regrow_by_gradient(g, mask, 2).numpy()
  np.testing.assert_array_equal(got, [1, 1, 1, 0, 0])


def test_keep_top_k_lexicographic():
  primary = np.array([1, 0, 1, 1, 0, 1], bool)
  secondary = np.array([0.5, 9.0, 0.0, 0.0, 9.0, 0.7], np.float32)
  tertiary = np.array([0, 0, 1, 3, 5, 0], np.float32)
  got = sparsity.keep_top_k_lexicographic([primary, secondary, tertiary], 3)
  # Primary first: {0, 2, 3, 5}; by secondary 5 (0.7), 0 (0.5), then the tie
  # between 2 and 3 at 0.0 goes to 3 (tertiary 3 > 1).
  np.testing.assert_array_equal(got.numpy(), [1, 0, 0, 1, 0, 1])
  # k = 5: all four primaries, then 4 beats 1 on the tertiary key (5 > 0).
  got = sparsity.keep_top_k_lexicographic([primary, secondary, tertiary], 5)
  np.testing.assert_array_equal(got.numpy(), [1, 0, 1, 1, 1, 1])


def _numpy_top_k_lexicographic(keys, k):
  """np.lexsort model: keys most significant first, ties to the lower index."""
  flat = [np.asarray(key, np.float64).ravel() for key in keys]
  index = np.arange(flat[0].size)
  order = np.lexsort([index] + [-key for key in reversed(flat)])
  out = np.zeros(flat[0].size, np.float32)
  out[order[:k]] = 1
  return out.reshape(np.shape(keys[0]))


@pytest.mark.parametrize('kinds', [
    'bff',    # FedDST's rule: one packed word.
    'bbff',   # Consensus regrowth's final rank: two words.
    'bfff',   # Three floats: two words.
    'fb',
    'b',      # One bool key: ties to the lower index only.
])
def test_keep_top_k_lexicographic_matches_lexsort(kinds):
  rng = np.random.default_rng(len(kinds))
  shape = (7, 9)
  for trial in range(5):
    keys = []
    for kind in kinds:
      if kind == 'b':
        keys.append(rng.random(shape) < 0.5)
      else:  # Few distinct values, zeros and big ones: ties on every key.
        keys.append(rng.choice(np.array([0.0, 1e-30, 0.25, 0.5, 3.0, 1e30],
                                        np.float32), shape))
    # With a bool first key: k below its count (only its True positions
    # sorted), equal (no sort) and above (all sorted).
    leaders = int(np.sum(keys[0] > 0))
    for k in (0, 1, 20, 62, 63, leaders - 1, leaders, leaders + 1):
      got = sparsity.keep_top_k_lexicographic(
          [tf.constant(key) for key in keys], k).numpy()
      np.testing.assert_array_equal(
          got, _numpy_top_k_lexicographic(keys, k), err_msg=f'{trial} {k}')


@pytest.mark.parametrize('r', [0, 1, 5, 10, 49, 50, 51, 120])
def test_cosine_schedule_values(r):
  alpha, end = 0.05, 50
  expected = alpha / 2 * (1 + math.cos(math.pi * r / end)) if r < end else 0.0
  got = float(sparsity.readjustment_fraction(r, alpha, end, 'cosine'))
  assert got == pytest.approx(expected, abs=1e-7)
  got = float(sparsity.readjustment_fraction(r, alpha, end, 'constant'))
  assert got == pytest.approx(alpha if r < end else 0.0)


def test_readjustment_rounds():
  rounds = [r for r in range(60)
            if bool(sparsity.is_readjustment_round(r, 0.05, 45, 10))]
  assert rounds == [1, 11, 21, 31, 41]
  assert not any(bool(sparsity.is_readjustment_round(r, 0.0, 45, 10))
                 for r in range(60))
  # Also inside a tf.function graph (tensor round numbers).
  fn = tf.function(lambda r: sparsity.is_readjustment_round(r, 0.05, 45, 10))
  assert [r for r in range(60) if bool(fn(tf.constant(r, tf.int64)))] == rounds


@pytest.mark.parametrize('every', [1, 2, 10])
def test_readjustment_rounds_at_every_cadence(every):
  """Rounds 1, 1 + R_adj, ... while α_r > 0 (independent enumeration)."""
  end = 25
  want = [r for r in range(1, end) if (r - 1) % every == 0]
  got = [r for r in range(40)
         if bool(sparsity.is_readjustment_round(r, 0.05, end, every))]
  assert got == want
  assert 0 not in got  # Round 0 trains on the initial mask.


@pytest.mark.parametrize('r,want', [(0, 0.5), (2, 0.65), (4, 0.8), (9, 0.8)])
def test_sparsity_at_round_moves_linearly(r, want):
  assert sparsity.sparsity_at_round(r, 0.5, 0.8, 4) == pytest.approx(want)
  assert sparsity.sparsity_at_round(r, 0.5, None, 4) == 0.5
