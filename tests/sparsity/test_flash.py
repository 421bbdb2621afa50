"""FLASH's mask rules (tff_feddst/sparsity/flash.py) against numpy models.

The oracles follow docs/notes/field_methods.md §2.8 (layer profile, server
mask) and our documented exact-count client event (§2.3 with exact counts).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from flash_numpy import (np_event_counts, np_flash_layer_profile,
                         np_largest_remainder, np_profile_counts,
                         np_redistribute, np_server_mask)
from tff_feddst.sparsity import flash

SHAPES = [(6, 10), (3, 3, 2, 4), (12, 5), (9,)]


def random_layers(seed, density=0.3, shapes=SHAPES):
  rng = np.random.default_rng(seed)
  kernels, masks = [], []
  for shape in shapes:
    size = int(np.prod(shape))
    m = np.zeros(size, np.float32)
    m[rng.choice(size, max(1, int(density * size)), replace=False)] = 1
    m = m.reshape(shape)
    scale = rng.uniform(0.1, 3.0)  # Layers differ in mean |w|.
    kernels.append((rng.normal(size=shape) * scale * m).astype(np.float32))
    masks.append(m)
  return kernels, masks


# --- stage 1: layer profile ------------------------------------------------------


@pytest.mark.parametrize('d', [0.1, 0.3, 0.6])
def test_layer_profile_counts_match_numpy_and_total_density(d):
  rng = np.random.default_rng(1)
  sizes = [int(np.prod(s)) for s in SHAPES]
  client_masks = []
  for _ in range(3):
    cm = []
    for s in SHAPES:
      m = (rng.uniform(size=s) < rng.uniform(0.05, 0.9)).astype(np.float32)
      cm.append(m)
    client_masks.append(cm)
  mean_live = [np.mean([cm[l].sum() for cm in client_masks])
               for l in range(len(SHAPES))]
  got = flash.layer_profile_counts(mean_live, sizes, d).numpy()
  want = np_profile_counts(client_masks, d)
  np.testing.assert_array_equal(got, want)
  assert got.sum() <= d * sum(sizes) + 1e-9
  dl = np_flash_layer_profile(client_masks, d)
  assert np.all(np.abs(got - dl * np.array(sizes)) < 1.0 + 1e-9)
  if np.all(dl < 1.0):  # No layer clipped: the profile's total is d·N.
    assert np.sum(dl * sizes) == pytest.approx(d * sum(sizes))
    assert got.sum() == math.floor(d * sum(sizes) + 1e-9)


def test_layer_profile_clips_at_one_and_keeps_the_shape():
  sizes = [100, 10, 1000]
  got = flash.layer_profile_counts([50.0, 10.0, 20.0], sizes, 0.2).numpy()
  # ρ̄ = 0.5, 1, 0.02; r = 222 / 80 -> the 10-weight layer clips to dense.
  assert got[1] == 10
  r = 0.2 * 1110 / 80
  np.testing.assert_array_equal(got, np_largest_remainder(
      np.minimum(np.array([0.5, 1.0, 0.02]) * r, 1.0) * sizes,
      math.floor(np.sum(np.minimum(np.array([0.5, 1.0, 0.02]) * r, 1.0)
                        * sizes) + 1e-9), np.array(sizes, float)))
  assert got.sum() <= 0.2 * 1110


def test_random_mask_has_exact_count_and_depends_on_seed():
  a = flash.random_mask((20, 30), 77, tf.constant([1, 2], tf.int64)).numpy()
  b = flash.random_mask((20, 30), 77, tf.constant([1, 3], tf.int64)).numpy()
  assert a.sum() == b.sum() == 77
  assert set(np.unique(a)) <= {0.0, 1.0}
  assert not np.array_equal(a, b)


# --- JMWST server rule ----------------------------------------------------------


@pytest.mark.parametrize('d', [0.05, 0.2, 0.5])
def test_server_counts_and_mask_match_numpy(d):
  rng = np.random.default_rng(2)
  w_agg = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
  for w in w_agg:  # Entries held by no client are 0.
    w[rng.uniform(size=w.shape) < 0.4] = 0.0
  b = [rng.uniform(0.1, 0.9) * w.size for w in w_agg]
  n_total = sum(w.size for w in w_agg)
  k = flash.server_layer_counts(b, d * n_total).numpy()
  want = np_server_mask(w_agg, b, d)
  assert list(k) == [int(m.sum()) for m in want]
  assert k.sum() <= d * n_total
  for w, kl, m in zip(w_agg, k, want):
    got = flash.top_k_mask(w, kl).numpy()
    np.testing.assert_array_equal(got > 0, m)


def test_server_masks_are_nested_for_smaller_budgets():
  rng = np.random.default_rng(3)
  w_agg = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
  b = [0.5 * w.size for w in w_agg]
  n_total = sum(w.size for w in w_agg)
  prev = None
  for d in (0.4, 0.3, 0.2, 0.1, 0.05):
    k = flash.server_layer_counts(b, d * n_total).numpy()
    masks = [flash.top_k_mask(w, kl).numpy() for w, kl in zip(w_agg, k)]
    if prev is not None:
      for small, big in zip(masks, prev):
        assert np.all(small <= big)
    prev = masks


def test_server_counts_keep_b_when_under_the_target():
  k = flash.server_layer_counts([10.5, 3.2, 0.0], 100.0).numpy()
  np.testing.assert_array_equal(k, [10, 3, 0])


# --- client DST event -------------------------------------------------------------


@pytest.mark.parametrize('seed', range(6))
def test_redistribute_matches_numpy(seed):
  rng = np.random.default_rng(seed)
  shares = rng.uniform(0, 2, 5)
  caps = rng.integers(0, 40, 5)
  total = int(rng.integers(0, caps.sum() + 10))
  got = flash.redistribute(total, list(shares), list(caps)).numpy()
  np.testing.assert_array_equal(got, np_redistribute(total, shares, caps))
  assert got.sum() == min(total, caps.sum())
  assert np.all(got <= caps) and np.all(got >= 0)


def test_redistribute_is_proportional_without_caps():
  shares = [0.5, 0.25, 0.25, 0.0]
  got = flash.redistribute(101, shares, [1000] * 4).numpy()
  assert got.sum() == 101
  assert np.all(np.abs(got - 101 * np.array(shares)) < 1)
  assert got[3] == 0
  # A full layer passes its share on to the others, in proportion.
  got = flash.redistribute(100, [0.5, 0.25, 0.25], [10, 1000, 1000]).numpy()
  np.testing.assert_array_equal(got, [10, 45, 45])


@pytest.mark.parametrize('p', [0.1, 0.25, 0.6])
@pytest.mark.parametrize('seed', [0, 5])
def test_client_event_counts_zeros_and_pruned_set(p, seed):
  kernels, masks = random_layers(seed)
  out = flash.client_readjust(kernels, masks, p,
                              tf.constant([seed, 7], tf.int64))
  pruned, kept, grow = np_event_counts(kernels, masks, p)
  np.testing.assert_array_equal(out.pruned.numpy(), pruned)
  np.testing.assert_array_equal(out.grown.numpy(), grow)
  assert sum(grow) == sum(pruned)  # Total density unchanged.
  for k, m, new_m, new_k, kp, r, g in zip(kernels, masks, out.masks,
                                          out.kernels, kept, pruned, grow):
    new_m, new_k = new_m.numpy(), new_k.numpy()
    # Exact live count per layer after the event.
    assert new_m.sum() == m.sum() - r + g
    # Pruned = the smallest |w| of the live weights.
    dropped = (m > 0) & ~kp
    assert np.all(kp <= (new_m > 0))
    if dropped.any() and kp.any():
      assert np.abs(k[dropped]).max() <= np.abs(k[kp]).min()
    # Regrown weights (live now, not kept) are exactly 0; the rest unchanged.
    regrown = (new_m > 0) & ~kp
    assert regrown.sum() == g
    assert np.all(new_k[regrown] == 0.0)
    np.testing.assert_array_equal(new_k[kp], k[kp])
    assert np.all(new_k[new_m == 0] == 0.0)


def test_client_event_regrowth_follows_the_layers_mean_magnitude():
  """Two layers of equal size and live count; the one with twice the mean
  |w| gets twice the regrowth (redistribution shares)."""
  rng = np.random.default_rng(0)
  m = np.zeros(400, np.float32)
  m[:100] = 1
  k1 = (np.abs(rng.normal(size=400)) + 1.0).astype(np.float32) * m
  k2 = 2 * k1
  out = flash.client_readjust([k1, k2], [m, m], 0.25,
                              tf.constant([0, 0], tf.int64))
  # 25 pruned per layer, 50 regrown split 1:2 = 16.7 : 33.3.
  np.testing.assert_array_equal(out.pruned.numpy(), [25, 25])
  np.testing.assert_array_equal(out.grown.numpy(), [17, 33])


def test_client_event_respects_budget_limits():
  kernels, masks = random_layers(4)
  limits = [int(m.sum()) for m in masks]
  out = flash.client_readjust(kernels, masks, 0.4,
                              tf.constant([4, 4], tf.int64), limits=limits)
  _, _, grow = np_event_counts(kernels, masks, 0.4, limits=limits)
  np.testing.assert_array_equal(out.grown.numpy(), grow)
  assert [int(m.numpy().sum()) for m in out.masks] == limits
  np.testing.assert_array_equal(out.grown.numpy(), out.pruned.numpy())


def test_random_regrowth_is_uniform_over_the_dead():
  """Seeded Monte Carlo: every dead weight is regrown about equally often."""
  size, live, grow = 40, 10, 6
  mask = np.zeros(size, np.float32)
  mask[:live] = 1
  hits = np.zeros(size)
  trials = 600
  for t in range(trials):
    new = flash.random_regrow(mask, grow, tf.constant([t, 1], tf.int64)).numpy()
    assert new.sum() == live + grow
    hits += new - mask
  assert hits[:live].sum() == 0
  expected = trials * grow / (size - live)  # 120
  assert np.all(np.abs(hits[live:] - expected) < 5 * math.sqrt(expected))


def test_schedule_and_event_rates():
  jmwst = flash.ClientDST(rate=0.25)
  for r in (0, 1, 7):
    rate, active = flash.client_schedule(r, jmwst)
    assert float(rate) == pytest.approx(0.25) and bool(active)
  spdst = flash.ClientDST(rate=0.25, stage_one_only=True)
  assert bool(flash.client_schedule(0, spdst)[1])
  assert not bool(flash.client_schedule(1, spdst)[1])
  ended = flash.ClientDST(rate=0.25, end_round=3)
  assert not bool(flash.client_schedule(3, ended)[1])
  cosine = flash.ClientDST(rate=0.2, schedule='cosine', end_round=4)
  assert float(flash.client_schedule(2, cosine)[0]) == pytest.approx(0.1)
  # FLASH's linear in-round decay at the epoch ends; E = 1: mid-epoch.
  assert float(flash.event_rate(0.25, 1, 4)) == pytest.approx(0.1875)
  assert float(flash.event_rate(0.25, 3, 4)) == pytest.approx(0.0625)
  assert float(flash.event_rate(0.25, 1, 1)) == pytest.approx(0.125)
