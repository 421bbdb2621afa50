"""PruneFL's reconfiguration against brute force over every mask containing
the protected core, and its stated edge cases."""

import dataclasses
import itertools
import json

import numpy as np
import pytest

from tff_feddst.sparsity import prunefl


def brute_force_best(weights, masks, importance, times, base_time,
                     max_decrease, base_importance=0.0):
  """max R over all supersets of the core (the memo's definition)."""
  cores = []
  for w, m in zip(weights, masks):
    live = np.sort(np.abs(w[m]))
    threshold = live[int(max_decrease * live.size)]
    cores.append(m & (np.abs(w) >= threshold))
  free = [(l, i) for l, k in enumerate(cores) for i in np.flatnonzero(~k.ravel())]
  best, best_masks = -np.inf, None
  for pick in itertools.product((False, True), repeat=len(free)):
    new = [k.copy().ravel() for k in cores]
    for (l, i), on in zip(free, pick):
      new[l][i] |= on
    r = prunefl.objective(new, importance, times, base_time=base_time,
                          base_importance=base_importance)
    if r > best + 1e-12:
      best, best_masks = r, new
  return best, best_masks


def random_case(seed):
  rng = np.random.default_rng(seed)
  shapes = [(2, 3), (4,)]
  weights = [rng.normal(size=s) for s in shapes]
  masks = [rng.random(s) < 0.5 for s in shapes]
  for m in masks:
    m.ravel()[0] = True  # Every layer has a live weight.
  importance = [rng.exponential(size=s) for s in shapes]
  times = list(rng.uniform(0.2, 2.0, size=len(shapes)))
  return weights, masks, importance, times, float(rng.uniform(0.5, 3.0))


@pytest.mark.parametrize('seed', range(12))
@pytest.mark.parametrize('max_decrease', [0.0, 0.3, 0.6])
def test_reconfiguration_attains_the_brute_force_maximum(seed, max_decrease):
  weights, masks, importance, times, base = random_case(seed)
  got = prunefl.reconfigure(weights, masks, importance, times, base_time=base,
                            max_decrease=max_decrease, base_importance=0.5)
  best, _ = brute_force_best(weights, masks, importance, times, base,
                             max_decrease, base_importance=0.5)
  assert prunefl.objective(got, importance, times, base_time=base,
                           base_importance=0.5) == pytest.approx(best)
  for g, m, w in zip(got, masks, weights):  # The core is kept.
    core = prunefl.protected_core(w, m, max_decrease)
    assert np.all(g[core])


@pytest.mark.parametrize('seed', range(6))
def test_the_cap_stops_the_greedy_early(seed):
  """As the authors' density limit: the uncapped greedy's first picks (the
  best ratios), truncated at the cap — not the exact capped maximum."""
  weights, masks, importance, times, base = random_case(seed)
  free = prunefl.reconfigure(weights, masks, importance, times,
                             base_time=base, max_decrease=0.3)
  core = [prunefl.protected_core(w, m, 0.3) for w, m in zip(weights, masks)]
  cap = int(sum(k.sum() for k in core)) + 1
  got = prunefl.reconfigure(weights, masks, importance, times, base_time=base,
                            max_decrease=0.3, max_live=cap)
  assert sum(g.sum() for g in got) == min(cap, sum(f.sum() for f in free))
  for g, f in zip(got, free):
    assert np.all(f[g])  # A subset of the uncapped mask.
  ratio = lambda sel: np.concatenate([
      s[sel(g, f, k)] / t for s, g, f, k, t in zip(importance, got, free,
                                                   core, times)])
  added = ratio(lambda g, f, k: g & ~k)
  dropped = ratio(lambda g, f, k: f & ~g)
  if added.size and dropped.size:
    assert added.min() >= dropped.max()


def test_no_decrease_and_no_importance_outside_keeps_the_mask():
  rng = np.random.default_rng(0)
  w, m = rng.normal(size=(5, 4)), rng.random((5, 4)) < 0.4
  s = np.where(m, rng.exponential(size=m.shape), 0.0)
  (got,) = prunefl.reconfigure([w], [m], [s], [1.0], base_time=1.0,
                               max_decrease=0.0)
  np.testing.assert_array_equal(got, m)


def test_zero_importance_never_joins_and_a_strong_weight_does():
  w = np.array([1.0, 2.0, 3.0, 0.0, 0.0])
  m = np.array([True, True, True, False, False])
  s = np.array([1.0, 1.0, 1.0, 0.0, 100.0])
  (got,) = prunefl.reconfigure([w], [m], [s], [1.0], base_time=1.0,
                               max_decrease=0.0)
  np.testing.assert_array_equal(got, [True, True, True, False, True])


def test_equal_times_give_one_importance_threshold():
  rng = np.random.default_rng(3)
  weights = [rng.normal(size=(30,)), rng.normal(size=(20,))]
  masks = [rng.random(30) < 0.3, rng.random(20) < 0.3]
  importance = [rng.exponential(size=30), rng.exponential(size=20)]
  got = prunefl.reconfigure(weights, masks, importance, [1.0, 1.0],
                            base_time=5.0, max_decrease=0.3)
  added = np.concatenate([s[g & ~prunefl.protected_core(w, m, 0.3)]
                          for s, g, w, m in zip(importance, got, weights,
                                                masks)])
  left = np.concatenate([s[~g] for s, g in zip(importance, got)])
  assert added.size and left.size
  assert added.min() >= left.max()


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_decrease=1.0), 'max_decrease'),
    (dict(max_decrease=0.3, base_time=0.0), 'base_time'),
])
def test_bad_arguments_are_refused(kwargs, message):
  args = dict(base_time=1.0)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    prunefl.reconfigure([np.ones(3)], [np.ones(3, bool)], [np.ones(3)], [1.0],
                        **args)


def test_reconfiguration_rounds_follow_the_authors_schedule():
  """The first after R_adj rounds of training, then every R_adj."""
  assert [r for r in range(12) if prunefl.is_reconfiguration_round(r, 4)
          ] == [4, 8]
  assert [r for r in range(4) if prunefl.is_reconfiguration_round(r, 1)
          ] == [1, 2, 3]


@pytest.mark.parametrize('densities, settled', [
    ([0.5, 0.45, 0.41, 0.38, 0.36, 0.34], True),   # every move <= 10%
    ([0.5, 0.45, 0.41, 0.38, 0.36], False),        # only four moves
    ([0.9, 0.5, 0.45, 0.41, 0.38, 0.36, 0.34], True),
    ([0.5, 0.45, 0.41, 0.30, 0.29, 0.28], False),  # 0.41 -> 0.30: -27%
    ([0.5, 0.54, 0.5, 0.54, 0.5, 0.54], True),     # +8% / -7.4%: settled
])
def test_initial_pruning_settles_after_five_small_moves(densities, settled):
  assert prunefl.initial_pruning_settled(densities) == settled


def test_time_model_by_hand():
  model = prunefl.TimeModel(compute_seconds=(0.0, 2e-6), bytes_per_weight=8.0,
                            fixed_bytes=1000.0, bandwidth_bytes=1e6,
                            overhead_seconds=0.5, base_compute_seconds=1e-4)
  n = 300
  assert model.layer_times(n) == pytest.approx([8e-6, 300 * 2e-6 + 8e-6])
  assert model.base_time(n) == pytest.approx(0.5 + 1e-3 + 300 * 1e-4)
  assert model.round_time([10, 20], n) == pytest.approx(
      0.531 + 10 * 8e-6 + 20 * (6e-4 + 8e-6))


def test_flop_compute_seconds_by_hand():
  """'flops': 6 · P_l FLOPs per weight per example at the given rate."""
  assert prunefl.flop_compute_seconds((576, 1), 2e9) == pytest.approx(
      (6 * 576 / 2e9, 6 / 2e9))


# A worked example: two kernels of four weights, one live in each (δ = 0:
# the core is the live weight), c = 1, S0 = 0, a round of n = 10 examples,
# 8 bytes per weight at 160 B/s (0.05 s of link per weight).
CONV_S = np.array([1.0, 4.0, 2.0, 0.6])
FC_S = np.array([1.0, 3.0, 1.0, 0.25])
ONE_LIVE = np.array([True, False, False, False])


def worked_selection(model):
  times = model.layer_times(10)
  return prunefl.reconfigure(
      [np.array([1.0, 0.0, 0.0, 0.0])] * 2, [ONE_LIVE] * 2, [CONV_S, FC_S],
      times, base_time=model.base_time(10), max_decrease=0.0)


def worked_model(compute_seconds):
  return prunefl.TimeModel(compute_seconds=compute_seconds,
                           bytes_per_weight=8.0, fixed_bytes=0.0,
                           bandwidth_bytes=160.0, overhead_seconds=1.0)


def test_flop_times_starve_the_conv_by_hand():
  """FLOPs (P = 19, 1 at 1200 FLOP/s): t = 1.0 (conv), 0.1 (fc). Core: num
  2, den 2.1. By s/t: fc 30 (R 5/2.2), fc 10 (6/2.3), conv 4 (10/3.3 =
  3.03), fc 2.5 < 3.03: stop."""
  model = worked_model(prunefl.flop_compute_seconds((19, 1), 1200.0))
  assert model.layer_times(10) == pytest.approx([1.0, 0.1])
  conv, fc = worked_selection(model)
  np.testing.assert_array_equal(conv, [True, True, False, False])
  np.testing.assert_array_equal(fc, [True, True, True, False])


def test_measured_times_with_a_free_conv_keep_it_by_hand():
  """Measured, the conv's compute 0 (as the authors' first conv): t = 0.05
  (link only), fc 0.1. Core: 2 / 1.15. By s/t: conv 80 (R 6/1.2), conv 40
  (8/1.25), fc 30 (11/1.35 = 8.15), conv 12 (11.6/1.4 = 8.29), fc 10
  (12.6/1.5 = 8.4), fc 2.5 < 8.4: stop."""
  model = worked_model((0.0, 0.005))
  assert model.layer_times(10) == pytest.approx([0.05, 0.1])
  conv, fc = worked_selection(model)
  np.testing.assert_array_equal(conv, [True, True, True, True])
  np.testing.assert_array_equal(fc, [True, True, True, False])


def test_base_compute_raises_c_and_with_it_the_density_by_hand():
  """With 0.5 s of mask-independent compute per example c = 1 + 10 · 0.5 =
  6 (FLOP times as above): core 2 / 7.1; fc 30 (5/7.2), fc 10 (6/7.3), conv
  4 (10/8.3 = 1.20), fc 2.5 (10.25/8.4 = 1.22), conv 2 (12.25/9.4 = 1.30),
  conv 0.6 < 1.30: stop. A longer fixed round makes each weight cheaper."""
  model = dataclasses.replace(worked_model(prunefl.flop_compute_seconds(
      (19, 1), 1200.0)), base_compute_seconds=0.5)
  assert model.base_time(10) == pytest.approx(6.0)
  conv, fc = worked_selection(model)
  np.testing.assert_array_equal(conv, [True, True, True, False])
  np.testing.assert_array_equal(fc, [True, True, True, True])


def test_initial_pruning_steps_follow_the_authors_cadence():
  """Accuracy seen after 100 steps: the rule runs after the round of 10
  steps that follows, then every 500 steps (theirs: every 50 rounds)."""
  assert [s for s in range(1, 1300) if prunefl.is_initial_reconfiguration_step(
      s, 100, 500)] == [110, 610, 1110]
  assert not any(prunefl.is_initial_reconfiguration_step(s, None, 500)
                 for s in range(1, 700))
  assert [s for s in range(1, 20) if prunefl.is_initial_reconfiguration_step(
      s, 0, 3)] == [10, 13, 16, 19]
  # The next event: a check every 100 steps until started, then the rule.
  assert [prunefl.next_initial_event(s, None, 500) for s in (0, 99, 100)] == [
      100, 100, 200]
  assert [prunefl.next_initial_event(s, 100, 500)
          for s in (100, 109, 110, 300, 610)] == [110, 110, 610, 610, 1110]


def test_measured_compute_loads_from_a_file_text_or_mapping(tmp_path):
  numbers = {'kernel_sizes': [250, 5000], 'base_seconds_per_example': 1e-4,
             'seconds_per_weight_per_example': [0.0, 2.5e-9],
             'model': 'mnist_cnn'}  # Other keys describe the measurement.
  path = tmp_path / 'times.json'
  path.write_text(json.dumps(numbers))
  want = prunefl.MeasuredCompute((250, 5000), (0.0, 2.5e-9), 1e-4)
  assert prunefl.load_measured_compute(str(path)) == want
  assert prunefl.load_measured_compute(numbers) == want
  assert prunefl.load_measured_compute(want.to_text()) == want
  assert json.loads(want.to_text()) == {
      k: v for k, v in numbers.items() if k != 'model'}


@pytest.mark.parametrize('change, message', [
    (dict(kernel_sizes=[250]), 'one entry per kernel'),
    (dict(seconds_per_weight_per_example=[0.0, -1.0]), 'finite numbers >= 0'),
    (dict(base_seconds_per_example=float('nan')), 'finite numbers >= 0'),
    (dict(kernel_sizes=[250, 0]), 'integers > 0'),
    (dict(base_seconds_per_example=None), 'missing base_seconds_per_example'),
])
def test_bad_measured_compute_is_refused_saying_why(change, message):
  numbers = {'kernel_sizes': [250, 5000], 'base_seconds_per_example': 0.0,
             'seconds_per_weight_per_example': [0.0, 2.5e-9]}
  numbers.update(change)
  numbers = {k: v for k, v in numbers.items() if v is not None}
  with pytest.raises(ValueError, match=message):
    prunefl.load_measured_compute(numbers)
  with pytest.raises(ValueError, match='cannot read /nonexistent.json'):
    prunefl.load_measured_compute('/nonexistent.json')
