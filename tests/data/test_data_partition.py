"""Seeded partitions: disjointness, completeness, skew, and test splits that follow train."""

import numpy as np
import pytest

from tff_feddst.data import partition as P

RNG = np.random.default_rng(12345)
LABELS = RNG.integers(0, 10, 3000)
TEST_LABELS = RNG.integers(0, 10, 600)

PARTITIONERS = {
    'dirichlet': lambda **kw: P.dirichlet_partition(LABELS, 40, 0.3, **kw),
    'k_class': lambda **kw: P.k_class_partition(LABELS, 40, 2, **kw),
    'iid': lambda **kw: P.iid_partition(LABELS, 40, **kw),
}


def assert_disjoint(parts):
  joined = np.concatenate(parts)
  assert len(joined) == len(np.unique(joined))


@pytest.mark.parametrize('kind', PARTITIONERS)
def test_disjoint_and_complete(kind):
  result = PARTITIONERS[kind](seed=0)
  assert_disjoint(result.train)
  # Without a test split only empty clients can be dropped, so every index is used.
  np.testing.assert_array_equal(np.sort(np.concatenate(result.train)),
                                np.arange(len(LABELS)))
  assert result.test is None
  assert result.summary.total_examples == len(LABELS)
  assert result.summary.num_clients + result.summary.dropped == 40


@pytest.mark.parametrize('kind', PARTITIONERS)
def test_seeded(kind):
  a, b, c = (
      PARTITIONERS[kind](seed=s, test_labels=TEST_LABELS) for s in (7, 7, 8))
  assert len(a.train) == len(b.train)
  for x, y in zip(a.train + a.test, b.train + b.test):
    np.testing.assert_array_equal(x, y)
  assert any(
      len(x) != len(y) or not np.array_equal(x, y)
      for x, y in zip(a.train, c.train))


def mean_classes(parts):
  return np.mean([len(np.unique(LABELS[p])) for p in parts])


def test_dirichlet_beta_controls_skew():
  skewed = P.dirichlet_partition(LABELS, 40, 0.01, seed=0)
  uniform = P.dirichlet_partition(LABELS, 40, 100.0, seed=0)
  assert mean_classes(skewed.train) < 2.0
  assert mean_classes(uniform.train) > 9.5
  assert skewed.summary.mean_classes_per_client == pytest.approx(
      mean_classes(skewed.train))


@pytest.mark.parametrize('k', [1, 2, 3])
def test_k_class_gives_exactly_k_classes(k):
  result = P.k_class_partition(LABELS, 25, k, seed=1, test_labels=TEST_LABELS)
  assert len(result.train) == 25
  assert all(len(np.unique(LABELS[p])) == k for p in result.train)
  # Classes are spread: no class is held by more than its fair share plus one.
  holders = np.bincount(
      np.concatenate([np.unique(LABELS[p]) for p in result.train]))
  assert holders.max() - holders.min() <= 1


def test_iid_sizes_balanced():
  result = P.iid_partition(LABELS, 7, seed=0)
  sizes = [len(p) for p in result.train]
  assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(LABELS)


def test_min_examples_drops_and_counts():
  unfiltered = P.dirichlet_partition(LABELS, 40, 0.3, seed=5)
  sizes = np.array([len(p) for p in unfiltered.train])
  filtered = P.dirichlet_partition(LABELS, 40, 0.3, seed=5, min_examples=80)
  expected_kept = [set(p) for p in unfiltered.train if len(p) >= 80]
  assert [set(p) for p in filtered.train] == expected_kept
  assert filtered.summary.dropped == 40 - len(
      expected_kept) > unfiltered.summary.dropped
  assert filtered.summary.examples_min >= 80
  assert filtered.summary.total_examples == sizes[sizes >= 80].sum()


def test_empty_clients_are_dropped():
  result = P.dirichlet_partition(LABELS, 200, 0.01, seed=0)
  assert result.summary.dropped > 0
  assert all(len(p) > 0 for p in result.train)
  assert result.summary.num_clients == len(
      result.train) == 200 - result.summary.dropped


@pytest.mark.parametrize('kind', PARTITIONERS)
def test_client_test_split_follows_train_classes(kind):
  result = PARTITIONERS[kind](seed=2, test_labels=TEST_LABELS)
  assert len(result.test) == len(result.train)
  assert_disjoint(result.test)
  for train, test in zip(result.train, result.test):
    assert len(test) > 0
    assert set(TEST_LABELS[test]) <= set(LABELS[train])


def test_client_test_counts_proportional_to_train_counts():
  result = P.k_class_partition(LABELS, 10, 2, seed=3, test_labels=TEST_LABELS)
  assert result.summary.dropped == 0
  train = np.stack([np.bincount(LABELS[p], minlength=10) for p in result.train])
  test = np.stack(
      [np.bincount(TEST_LABELS[t], minlength=10) for t in result.test])
  expected = np.bincount(TEST_LABELS, minlength=10) * train / train.sum(0)
  assert np.all(np.abs(test - expected) < 1)
  assert test.sum() == len(
      TEST_LABELS)  # Every class is held by some client here.


def test_hand_made_two_class_client():
  labels = np.array([1, 1, 1, 3, 3, 0, 0, 0, 2, 2, 2, 2])
  test_labels = np.array([0, 1, 2, 3, 1, 3, 0, 2])
  result = P.k_class_partition(labels, 2, 2, seed=0, test_labels=test_labels)
  for train, test in zip(result.train, result.test):
    assert set(test_labels[test]) == set(labels[train])
  assert sorted(np.concatenate(result.test)) == list(range(8))


def test_summary_is_one_line():
  summary = P.iid_partition(LABELS, 4, seed=0).summary
  text = str(summary)
  assert '\n' not in text
  assert text.startswith(
      '4 clients, 3000 train examples') and '0 clients dropped' in text


def test_invalid_arguments():
  with pytest.raises(ValueError, match='beta'):
    P.dirichlet_partition(LABELS, 4, 0.0, seed=0)
  with pytest.raises(ValueError, match='classes_per_client'):
    P.k_class_partition(LABELS, 4, 11, seed=0)
  with pytest.raises(ValueError, match='1-D integer'):
    P.iid_partition(LABELS.astype(float), 4, seed=0)
  with pytest.raises(ValueError, match='no clients'):
    P.iid_partition(LABELS, 4, seed=0, min_examples=10_000)
