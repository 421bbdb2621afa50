"""Federated datasets as TFF `ClientData`: partitioned centralized data, or EMNIST.

Every client example is `OrderedDict(x=float32 (H, W, C) in [0, 1], y=int32 ())`,
and every client id appears in both the train and the per-client test data.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sqlite3
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from absl import logging

from tff_feddst import choices
from tff_feddst.data import partition as partition_lib
from tff_feddst.data import presence
from tff_feddst.data.sources import CentralizedData

PARTITIONS = choices.PARTITIONS


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedData:
  """Per-client train and test ClientData plus the whole test set for central eval."""

  train: tff.simulation.datasets.ClientData
  test: tff.simulation.datasets.ClientData
  central_test: tuple[np.ndarray, np.ndarray]
  num_classes: int
  input_shape: tuple[int, ...]
  summary: partition_lib.PartitionSummary
  name: str

  @property
  def element_spec(self) -> collections.OrderedDict:
    return collections.OrderedDict(x=tf.TensorSpec(self.input_shape,
                                                   tf.float32),
                                   y=tf.TensorSpec((), tf.int32))

  @property
  def client_ids(self) -> list[str]:
    return self.train.client_ids


def build_federated_data(centralized: CentralizedData,
                         *,
                         partition: str = 'dirichlet',
                         num_clients: int,
                         beta: float = 0.1,
                         classes_per_client: int = 2,
                         min_examples: int = 0,
                         seed: int = 0) -> FederatedData:
  """Partitions a centralized dataset over simulated clients (see `partition`).

    Kept clients are renumbered '0000', '0001', ...; each client's test split
    has the class mix of its train split.
    """
  common = dict(seed=seed,
                test_labels=centralized.y_test,
                min_examples=min_examples)
  if partition == 'dirichlet':
    part = partition_lib.dirichlet_partition(centralized.y_train, num_clients,
                                             beta, **common)
  elif partition == 'k_class':
    part = partition_lib.k_class_partition(centralized.y_train, num_clients,
                                           classes_per_client, **common)
  elif partition == 'iid':
    part = partition_lib.iid_partition(centralized.y_train, num_clients,
                                       **common)
  else:
    raise ValueError(
        f'unknown partition {partition!r}; valid: {", ".join(PARTITIONS)}')
  width = max(4, len(str(len(part.train) - 1)))
  ids = [f'{k:0{width}d}' for k in range(len(part.train))]

  def client_data(
      x: np.ndarray, y: np.ndarray,
      parts: list[np.ndarray]) -> tff.simulation.datasets.ClientData:
    return tff.simulation.datasets.TestClientData({
        cid: collections.OrderedDict(x=x[idx], y=y[idx])
        for cid, idx in zip(ids, parts)
    })

  logging.info('%s, %s partition: %s', centralized.name, partition,
               part.summary)
  return FederatedData(train=client_data(centralized.x_train,
                                         centralized.y_train, part.train),
                       test=client_data(centralized.x_test, centralized.y_test,
                                        part.test),
                       central_test=(centralized.x_test, centralized.y_test),
                       num_classes=centralized.num_classes,
                       input_shape=centralized.input_shape,
                       summary=part.summary,
                       name=centralized.name)


def _emnist_to_xy(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """TFF EMNIST elements (label, pixels (28, 28)) -> OrderedDict(x (28, 28, 1), y)."""
  return dataset.map(lambda e: collections.OrderedDict(
      x=tf.expand_dims(e['pixels'], -1),
      y=tf.reshape(tf.cast(e['label'], tf.int32), [])),
                     num_parallel_calls=tf.data.AUTOTUNE)


def _emnist_client_sizes(path: Path, split: str) -> dict[str, int]:
  with sqlite3.connect(f'file:{path}?mode=ro', uri=True) as con:
    rows = con.execute(
        'SELECT client_id, num_examples FROM client_metadata '
        'WHERE split_name = ?', (split,))
    return {cid: int(n) for cid, n in rows}


def _emnist_central_test(path: Path,
                         split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a whole test split with one SQL query (per-client reads would be slow)."""
  with sqlite3.connect(f'file:{path}?mode=ro', uri=True) as con:
    protos = [
        r[0] for r in con.execute(
            'SELECT serialized_example_proto FROM examples WHERE split_name = ?',
            (split,))
    ]
  features = {
      'pixels': tf.io.FixedLenFeature((28, 28), tf.float32),
      'label': tf.io.FixedLenFeature((), tf.int64)
  }
  parsed = tf.io.parse_example(tf.constant(protos, dtype=tf.string), features)
  return (parsed['pixels'].numpy()[..., np.newaxis].astype(np.float32),
          parsed['label'].numpy().astype(np.int32))


def load_emnist(cache_dir: str | os.PathLike | None = None,
                *,
                only_digits: bool = True,
                min_examples: int = 0) -> FederatedData:
  """TFF's federated EMNIST (natural per-writer split) from `cache_dir/emnist_all.sqlite`.

    `cache_dir` defaults to TFF's own cache, ~/.tff. Clients with fewer than
    `min_examples` train examples, or without test examples, are dropped (the
    reference drops small LEAF FEMNIST clients the same way). Pixels are kept
    as TFF stores them (floats in [0, 1]).
    """
  path = presence.emnist_file(cache_dir)
  cache_dir = path.parent
  prefix = 'digits_only' if only_digits else 'all'
  train_sizes = _emnist_client_sizes(path, f'{prefix}_train')
  test_sizes = _emnist_client_sizes(path, f'{prefix}_test')
  ids = sorted(cid for cid, n in train_sizes.items()
               if n >= max(min_examples, 1) and test_sizes.get(cid, 0) > 0)
  if not ids:
    raise ValueError(
        f'{path}: no EMNIST client has >= {min_examples} train examples '
        'and a test split')
  train_cd, test_cd = tff.simulation.datasets.emnist.load_data(
      only_digits=only_digits, cache_dir=str(cache_dir))

  def restrict(cd):
    return restrict_clients(cd, ids, transform=_emnist_to_xy)

  summary = partition_lib.PartitionSummary.from_counts(
      np.array([train_sizes[c] for c in ids]), None,
      len(train_sizes) - len(ids))
  name = 'emnist' if only_digits else 'emnist_all'
  logging.info('%s: %s', name, summary)
  return FederatedData(train=restrict(train_cd),
                       test=restrict(test_cd),
                       central_test=_emnist_central_test(
                           path, f'{prefix}_test'),
                       num_classes=10 if only_digits else 62,
                       input_shape=(28, 28, 1),
                       summary=summary,
                       name=name)


def preprocess(dataset: tf.data.Dataset,
               *,
               batch_size: int,
               shuffle_buffer: int = 1000,
               shuffle_seed: int | None = None) -> tf.data.Dataset:
  """Shuffles (unless shuffle_buffer == 0, e.g. for evaluation) and batches a client's data.

    Does not repeat: the training loop owns the number of local epochs.
    """
  if shuffle_buffer > 0:
    dataset = dataset.shuffle(shuffle_buffer, seed=shuffle_seed)
  return dataset.batch(batch_size)


def first_clients(federated: FederatedData, count: int) -> FederatedData:
  """`federated` restricted to its first `count` clients (train and test).

  For datasets whose clients are given (EMNIST writers, TFRecord files):
  `--total_clients` takes the first N instead of partitioning.
  """
  ids = federated.client_ids[:count]
  return dataclasses.replace(federated,
                             train=restrict_clients(federated.train, ids),
                             test=restrict_clients(federated.test, ids))


def restrict_clients(client_data: tff.simulation.datasets.ClientData,
                     ids, transform=None) -> tff.simulation.datasets.ClientData:
  """`client_data` with only the clients `ids` (each dataset mapped by
  `transform(dataset)` if given), still serializable for TFF."""
  fn = client_data.serializable_dataset_fn
  dataset_fn = fn if transform is None else (lambda cid: transform(fn(cid)))
  return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
      ids, dataset_fn)
