"""Which clients train in a round, and their datasets: pure functions of (seed, round).

A resumed run therefore samples the same clients and shuffles their data the
same way as an uninterrupted one. Rounds are numbered from 1.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import data as data_lib


def sample_clients(client_ids: Sequence[str], num_clients: int, *, seed: int,
                   round_num: int) -> list[str]:
  """`num_clients` distinct clients for round `round_num`, drawn without replacement.

  The draw depends only on (seed, round_num) and the set of ids (they are
  sorted first, so their order does not matter).
  """
  ids = sorted(client_ids)
  if not 1 <= num_clients <= len(ids):
    raise ValueError(f'num_clients must be in [1, {len(ids)}] (the number of '
                     f'clients), got {num_clients}.')
  if seed < 0 or round_num < 0:
    raise ValueError(f'seed and round_num must be >= 0, got {seed}, {round_num}.')
  rng = np.random.default_rng([seed, round_num])
  return [str(c) for c in rng.choice(ids, num_clients, replace=False)]


def client_shuffle_seed(seed: int, round_num: int, client_id: str) -> int:
  """The shuffle seed of `client_id`'s data in round `round_num`."""
  rng = np.random.default_rng([seed, round_num, zlib.crc32(client_id.encode())])
  return int(rng.integers(0, 2**31 - 1))


def round_datasets(train: tff.simulation.datasets.ClientData,
                   client_ids: Sequence[str], *, batch_size: int, seed: int,
                   round_num: int, shuffle_buffer: int = 1000
                   ) -> list[tf.data.Dataset]:
  """Shuffled, batched datasets of `client_ids` for round `round_num`."""
  return [
      data_lib.preprocess(
          train.create_tf_dataset_for_client(cid), batch_size=batch_size,
          shuffle_buffer=shuffle_buffer,
          shuffle_seed=client_shuffle_seed(seed, round_num, cid))
      for cid in client_ids
  ]


def initial_client_dataset(federated_data: data_lib.FederatedData,
                           batch_size: int, *, seed: int) -> tf.data.Dataset:
  """The training data of the one client an algorithm starts on (PruneFL's
  initial pruning): the client drawn for round 0 (rounds are numbered from
  1, so round 0's draw is free), shuffled and batched as in a round."""
  (client,) = sample_clients(federated_data.client_ids, 1, seed=seed,
                             round_num=0)
  return round_datasets(federated_data.train, [client],
                        batch_size=batch_size, seed=seed, round_num=0)[0]


def with_budgets(datasets: Sequence[tf.data.Dataset],
                 client_ids: Sequence[str],
                 assignment: Mapping[str, float]) -> list[OrderedDict]:
  """Each client's data with its density budget: `<data=B*, budget=float32*>`
  (`templates.hooks.budget_data_type`)."""
  return [OrderedDict(data=ds, budget=tf.data.Dataset.from_tensors(
      np.float32(assignment[cid]))) for ds, cid in zip(datasets, client_ids)]


def batch_input_spec(federated_data: data_lib.FederatedData, batch_size: int):
  """The batched element spec of the client datasets (the process's `input_spec`)."""
  element = federated_data.train.create_tf_dataset_for_client(
      federated_data.client_ids[0])
  return data_lib.preprocess(element, batch_size=batch_size,
                             shuffle_buffer=0).element_spec
