"""Per-client density budgets in plain Python: parsing, refusals, assignment,
the sub-mask rule (against brute force), and the registry's flag messages."""

import collections
import itertools

import numpy as np
import pytest

from tff_feddst.algorithms import registry
from tff_feddst.sparsity import budgets


def test_parse_sorts_by_density_and_reads_pairs():
  got = budgets.parse(' 0.2:0.4, 0.05:0.3,0.1:0.3 ')
  assert got == (budgets.Budget(0.05, 0.3), budgets.Budget(0.1, 0.3),
                 budgets.Budget(0.2, 0.4))
  assert budgets.parse([(0.1, 0.5), (0.2, 0.5)]) == (
      budgets.Budget(0.1, 0.5), budgets.Budget(0.2, 0.5))
  assert budgets.to_text(got) == '0.05:0.3,0.1:0.3,0.2:0.4'
  assert budgets.parse('1:1') == (budgets.Budget(1.0, 1.0),)


@pytest.mark.parametrize('text,message', [
    ('0.1:0.5,0.2:0.4', 'sum to 0.9, not 1'),
    ('0.1:0.5,0.2:0.6', 'sum to 1.1, not 1'),
    ('0:0.5,0.2:0.5', 'density 0 is outside (0, 1]'),
    ('1.5:1', 'density 1.5 is outside (0, 1]'),
    ('-0.1:1', 'density -0.1 is outside'),
    ('0.1:0,0.2:1', 'fraction 0 (of density 0.1) is outside'),
    ('0.1', "cannot read '0.1'"),
    ('0.1:0.5:0.5', "cannot read '0.1:0.5:0.5'"),
    ('a:b', "cannot read 'a:b'"),
    ('0.1:0.5,', "cannot read ''"),
    ('', 'is empty'),
    ('0.1:0.5,0.1:0.5', 'density listed twice'),
])
def test_parse_refusals_name_the_option(text, message):
  with pytest.raises(budgets.BudgetError, match='client_density_budgets') as e:
    budgets.parse(text)
  assert message in str(e.value)


def test_budgets_must_fit_the_global_density():
  parsed = budgets.parse('0.1:0.5,0.2:0.5')
  budgets.check_sparsity(parsed, 0.8)  # 0.2 == 1 - S is allowed.
  with pytest.raises(budgets.BudgetError,
                     match=r'budget 0.2 is above the global density '
                           r'1 - sparsity = 0.15'):
    budgets.check_sparsity(parsed, 0.85)
  with pytest.raises(budgets.BudgetError, match='needs a sparse model'):
    budgets.check_sparsity(parsed, 0.0)


@pytest.mark.parametrize('fractions,n,want', [
    ((0.3, 0.3, 0.4), 10, [3, 3, 4]),
    ((0.3, 0.3, 0.4), 7, [2, 2, 3]),      # 2.1, 2.1, 2.8 -> remainder to 2.8
    ((0.5, 0.5), 5, [3, 2]),              # tie -> the earlier group
    ((0.3, 0.3, 0.4), 1, [0, 0, 1]),
    ((0.3, 0.3, 0.4), 0, [0, 0, 0]),
    ((0.05, 0.95), 400, [20, 380]),
    ((1 / 3, 1 / 3, 1 / 3), 400, [134, 133, 133]),
])
def test_group_sizes_are_exact(fractions, n, want):
  got = budgets.group_sizes(fractions, n)
  assert got == want and sum(got) == n


def test_assignment_exact_sizes_and_deterministic_by_seed():
  parsed = budgets.parse('0.05:0.3,0.1:0.3,0.2:0.4')
  ids = [f'client_{i}' for i in range(23)]
  a = budgets.assign(parsed, ids, seed=7)
  assert sorted(a) == sorted(ids)
  sizes = collections.Counter(a.values())
  assert [sizes[d] for d in (0.05, 0.1, 0.2)] == budgets.group_sizes(
      [0.3, 0.3, 0.4], 23) == [7, 7, 9]
  # The same seed gives the same budgets, whatever the order of the ids.
  assert budgets.assign(parsed, list(reversed(ids)), seed=7) == a
  others = [budgets.assign(parsed, ids, seed=s) for s in range(8, 12)]
  assert any(o != a for o in others)
  for o in others:
    assert collections.Counter(o.values()) == sizes


def test_layer_counts_rule():
  # Global density (10 + 30 + 0) / 200 = 0.2; budget 0.1 halves each layer.
  assert list(budgets.layer_counts([10, 30, 0], [50, 100, 50], 0.1)) == [
      5, 15, 0]
  # A layer keeps at least one weight.
  assert list(budgets.layer_counts([1, 39], [50, 150], 0.1)) == [1, 19]
  # A budget at (or above) the global density keeps the global mask.
  assert list(budgets.layer_counts([10, 30], [100, 100], 0.2)) == [10, 30]
  assert list(budgets.layer_counts([10, 30], [100, 100], 0.9)) == [10, 30]
  # Float32 budget: 0.1 is 0.100000001 as float32, k = floor(...) stays 5.
  assert budgets.as_float32(0.1) != 0.1


def brute_force_budget_mask(w, m, k):
  """Enumerate: the k-subset of live weights with the largest |w| sum,
  ties to the lexicographically smallest index set."""
  live = list(np.flatnonzero(m.reshape(-1) > 0))
  best = max(itertools.combinations(live, k),
             key=lambda s: (sum(abs(w.reshape(-1)[i]) for i in s),
                            [-i for i in s]))
  out = np.zeros(m.size, np.float32)
  out[list(best)] = 1
  return out.reshape(m.shape)


def test_budget_masks_keep_the_largest_magnitudes_of_the_global_mask():
  rng = np.random.default_rng(0)
  w = [rng.normal(size=(3, 4)).astype(np.float32),
       rng.normal(size=(5,)).astype(np.float32)]
  w[0][0, 1] = w[0][2, 3] = 0.7  # A tie.
  m = [(rng.random((3, 4)) < 0.6).astype(np.float32),
       np.ones(5, np.float32)]
  m[0][0, 1] = m[0][2, 3] = 1
  live = [int(x.sum()) for x in m]
  for budget in (0.1, 0.3, 0.5):
    counts = budgets.layer_counts(live, [12, 5], budget)
    sub = budgets.budget_masks(w, m, budget)
    for s, wl, ml, k in zip(sub, w, m, counts):
      assert s.sum() == k and np.all(s <= ml)
      np.testing.assert_array_equal(s, brute_force_budget_mask(wl, ml, k))


def resolve(algorithm, **given):
  return registry.resolve(algorithm, given, rounds=10,
                          size_defaults={'rounds_between_readjustments': 3},
                          flag_prefix='--')


@pytest.mark.parametrize('algorithm', ['feddst', 'feddst_consensus',
                                       'random_mask', 'feddst_prox'])
def test_registry_takes_budgets_for_every_sparse_algorithm(algorithm):
  hp = resolve(algorithm, client_density_budgets='0.2:0.4,0.05:0.6')
  assert hp['client_density_budgets'] == '0.05:0.6,0.2:0.4'
  assert resolve(algorithm)['client_density_budgets'] is None


@pytest.mark.parametrize('given,message', [
    (dict(client_density_budgets='0.1:0.5,0.2:0.4'),
     '--client_density_budgets: the fractions sum to 0.9'),
    (dict(client_density_budgets='0.1:0.5,0.3:0.5'),
     '--client_density_budgets: budget 0.3 is above the global density '
     '1 - --sparsity = 0.2'),
    (dict(client_density_budgets='0.1;0.5'), '--client_density_budgets: '
     "cannot read '0.1;0.5'"),
    (dict(client_density_budgets='0.1:1', sparsity=0.0),
     '--client_density_budgets needs a sparse model (--sparsity > 0'),
    (dict(client_density_budgets='0.1:1', dp_noise_multiplier=1.0,
          dp_clip_norm=1.0, readjustment_ratio=0.0),
     '--client_density_budgets cannot be used with --dp_noise_multiplier'),
])
def test_registry_refusals_name_the_flag(given, message):
  with pytest.raises(registry.OptionError) as e:
    resolve('feddst', **given)
  assert message in str(e.value)


def test_dense_algorithms_refuse_budgets():
  with pytest.raises(registry.OptionError,
                     match='--client_density_budgets applies only to '
                           '--algorithm feddst'):
    resolve('fedavg', client_density_budgets='0.1:1')
