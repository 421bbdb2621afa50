"""Client sampling and per-round datasets are pure functions of (seed, round)."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_feddst.program import sampling

IDS = [f'{i:04d}' for i in range(50)]


def test_sample_is_a_pure_function_of_seed_and_round():
  first = sampling.sample_clients(IDS, 7, seed=3, round_num=11)
  # Same (seed, round) -> same clients, whatever was sampled in between and
  # whatever the order of the ids.
  sampling.sample_clients(IDS, 7, seed=3, round_num=12)
  assert sampling.sample_clients(list(reversed(IDS)), 7, seed=3,
                                 round_num=11) == first
  assert len(set(first)) == 7 and set(first) <= set(IDS)
  # Other rounds and seeds draw other samples.
  others = {tuple(sampling.sample_clients(IDS, 7, seed=s, round_num=r))
            for s in (3, 4) for r in range(1, 11)}
  assert len(others) == 20


def test_sample_matches_documented_rng():
  expected = np.random.default_rng([5, 2]).choice(sorted(IDS), 4, replace=False)
  assert sampling.sample_clients(IDS, 4, seed=5, round_num=2) == list(expected)


@pytest.mark.parametrize('k', [0, 51])
def test_sample_size_out_of_range(k):
  with pytest.raises(ValueError, match='num_clients'):
    sampling.sample_clients(IDS, k, seed=0, round_num=1)


def test_all_clients_every_round_when_k_equals_n():
  assert sorted(sampling.sample_clients(IDS, 50, seed=0, round_num=9)) == IDS


def test_round_datasets_shuffle_depends_on_seed_round_and_client():
  data = tff.simulation.datasets.TestClientData({
      cid: collections.OrderedDict(
          x=np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1) + 100 * k,
          y=np.arange(40, dtype=np.int32))
      for k, cid in enumerate(['a', 'b'])})

  def order(round_num, seed=0):
    datasets = sampling.round_datasets(data, ['a', 'b'], batch_size=8,
                                       seed=seed, round_num=round_num)
    return [np.concatenate([b['y'] for b in ds.as_numpy_iterator()]).tolist()
            for ds in datasets]

  first = order(1)
  assert order(1) == first  # Reproducible.
  assert sorted(first[0]) == list(range(40))  # A permutation, nothing lost.
  assert first[0] != first[1]  # Clients shuffle differently.
  assert order(2) != first and order(1, seed=1) != first
  assert sampling.client_shuffle_seed(0, 1, 'a') == sampling.client_shuffle_seed(
      0, 1, 'a')
