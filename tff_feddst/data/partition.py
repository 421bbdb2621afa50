"""Seeded IID and non-IID partitions of a labelled dataset over simulated clients.

Every partitioner returns a `Partition`: per-client index arrays into the train
labels and, when test labels are given, into the test labels. As in the FedDST
reference code, a client's test split follows its train split's class mix: the
test examples of each class are dealt out to the clients in proportion to how
many train examples of that class each client holds, so per-client test
accuracy measures the client's own task.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging


@dataclasses.dataclass(frozen=True)
class PartitionSummary:
  """Shape of a partition, for logs and result files."""

  num_clients: int
  total_examples: int
  examples_min: int
  examples_median: float
  examples_max: int
  mean_classes_per_client: float | None  # None when labels were not inspected.
  dropped: int

  def __str__(self) -> str:
    classes = ('n/a' if self.mean_classes_per_client is None else
               f'{self.mean_classes_per_client:.2f}')
    return (
        f'{self.num_clients} clients, {self.total_examples} train examples, '
        f'examples/client min {self.examples_min} median {self.examples_median:g} '
        f'max {self.examples_max}, mean classes/client {classes}, '
        f'{self.dropped} {"client" if self.dropped == 1 else "clients"} '
        'dropped (no train or no test examples)')

  @classmethod
  def from_counts(cls, counts: np.ndarray, mean_classes: float | None,
                  dropped: int) -> PartitionSummary:
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size == 0:
      return cls(0, 0, 0, 0.0, 0, mean_classes, dropped)
    return cls(int(counts.size), int(counts.sum()), int(counts.min()),
               float(np.median(counts)), int(counts.max()), mean_classes,
               dropped)


@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
  """Kept clients' example indices; `test` is None when no test labels were given."""

  train: list[np.ndarray]
  test: list[np.ndarray] | None
  summary: PartitionSummary


def _check_labels(labels: np.ndarray, what: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
        f'{what} must be a 1-D integer array, got {labels.dtype} {labels.shape}'
    )
  if labels.size and labels.min() < 0:
    raise ValueError(f'{what} must be non-negative')
  return labels


def _split(indices: np.ndarray, boundaries: np.ndarray) -> list[np.ndarray]:
  """Cuts `indices` at cumulative `boundaries` (length num_clients, last == len)."""
  return np.split(indices, boundaries[:-1])


def _class_counts(labels: np.ndarray, parts: list[np.ndarray],
                  num_classes: int) -> np.ndarray:
  """(num_clients, num_classes) matrix of train examples per client and class."""
  counts = np.zeros((len(parts), num_classes), dtype=np.int64)
  for k, p in enumerate(parts):
    counts[k] = np.bincount(labels[p], minlength=num_classes)
  return counts


def _deal_test_like_train(train_counts: np.ndarray, test_labels: np.ndarray,
                          rng: np.random.Generator) -> list[np.ndarray]:
  """Splits each test class over clients in proportion to their train counts of it."""
  num_clients, num_classes = train_counts.shape
  chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
  for c in range(min(num_classes, int(test_labels.max(initial=-1)) + 1)):
    weights = train_counts[:, c]
    total = int(weights.sum())
    if total == 0:
      continue  # No kept client trains on class c; it stays in the central test only.
    idx = rng.permutation(np.flatnonzero(test_labels == c))
    # Integer arithmetic: zero-weight clients get nothing and the last cut is exact.
    boundaries = (len(idx) * np.cumsum(weights)) // total
    for k, part in enumerate(_split(idx, boundaries)):
      chunks[k].append(part)
  return [
      np.concatenate(ch) if ch else np.zeros(0, dtype=np.int64) for ch in chunks
  ]


def _finish(labels: np.ndarray, parts: list[np.ndarray],
            test_labels: np.ndarray | None, min_examples: int,
            rng: np.random.Generator, kind: str) -> Partition:
  """Drops small clients, deals the test split, shuffles each client, summarizes.

    A client is dropped if it has fewer than max(min_examples, 1) train examples
    or, when a test split is dealt, no test examples (like the reference code,
    which ignores clients with an empty train or test loader).
    """
  num_classes = int(labels.max(initial=-1)) + 1
  if test_labels is not None:
    num_classes = max(num_classes, int(test_labels.max(initial=-1)) + 1)
  kept = [p for p in parts if len(p) >= max(min_examples, 1)]
  counts = _class_counts(labels, kept, num_classes)
  test_parts = None
  if test_labels is not None:
    test_parts = _deal_test_like_train(counts, test_labels, rng)
    has_test = [len(t) > 0 for t in test_parts]
    kept = [p for p, ok in zip(kept, has_test) if ok]
    counts = counts[np.asarray(has_test, dtype=bool)]
    test_parts = [
        rng.permutation(t) for t, ok in zip(test_parts, has_test) if ok
    ]
  kept = [rng.permutation(p) for p in kept]
  dropped = len(parts) - len(kept)
  if dropped:
    logging.info(
        '%s partition: dropped %d of %d clients (fewer than %d train examples or '
        'no test examples)', kind, dropped, len(parts), max(min_examples, 1))
  if not kept:
    raise ValueError(
        f'{kind} partition left no clients (min_examples={min_examples}); '
        'use fewer clients or a smaller min_examples')
  mean_classes = float((counts > 0).sum(axis=1).mean())
  summary = PartitionSummary.from_counts(np.array([len(p) for p in kept]),
                                         mean_classes, dropped)
  return Partition(kept, test_parts, summary)


def _check_common(num_clients: int, min_examples: int) -> None:
  if num_clients < 1:
    raise ValueError(f'num_clients must be >= 1, got {num_clients}')
  if min_examples < 0:
    raise ValueError(f'min_examples must be >= 0, got {min_examples}')


def dirichlet_partition(labels: np.ndarray,
                        num_clients: int,
                        beta: float,
                        *,
                        seed: int,
                        test_labels: np.ndarray | None = None,
                        min_examples: int = 0) -> Partition:
  """Label-skewed split: each class is divided over clients by p ~ Dirichlet(beta).

    As in FedDST's `distribute_clients_dirichlet`, one proportion vector per class
    is drawn over all clients and the class's (shuffled) examples are cut in those
    proportions; small beta concentrates each class on few clients. Unlike the
    reference, client k receives exactly its own share p[c, k] (the reference's
    offsets are shifted by one client, discarding the first share).
    """
  labels = _check_labels(labels, 'labels')
  test_labels = None if test_labels is None else _check_labels(
      test_labels, 'test_labels')
  _check_common(num_clients, min_examples)
  if not beta > 0:
    raise ValueError(f'beta must be > 0, got {beta}')
  rng = np.random.default_rng(seed)
  classes = np.unique(labels)
  proportions = rng.dirichlet(np.full(num_clients, float(beta)),
                              size=len(classes))
  chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
  for c, p in zip(classes, proportions):
    idx = rng.permutation(np.flatnonzero(labels == c))
    # Rounded cumulative cuts: shares sum exactly to the class size.
    boundaries = np.rint(np.cumsum(p) / p.sum() * len(idx)).astype(np.int64)
    for k, part in enumerate(_split(idx, boundaries)):
      chunks[k].append(part)
  parts = [np.concatenate(ch) for ch in chunks]
  return _finish(labels, parts, test_labels, min_examples, rng,
                 f'dirichlet(beta={beta})')


def k_class_partition(labels: np.ndarray,
                      num_clients: int,
                      classes_per_client: int,
                      *,
                      seed: int,
                      test_labels: np.ndarray | None = None,
                      min_examples: int = 0) -> Partition:
  """Pathological non-IID split: every client holds exactly `classes_per_client` classes.

    Classes are assigned greedily to the least-used ones (random tie-breaks), so
    each class is held by about num_clients * k / num_classes clients; a class's
    examples are shuffled and split evenly among its holders.
    """
  labels = _check_labels(labels, 'labels')
  test_labels = None if test_labels is None else _check_labels(
      test_labels, 'test_labels')
  _check_common(num_clients, min_examples)
  classes = np.unique(labels)
  if not 1 <= classes_per_client <= len(classes):
    raise ValueError(f'classes_per_client must be in [1, {len(classes)}], '
                     f'got {classes_per_client}')
  rng = np.random.default_rng(seed)
  usage = np.zeros(len(classes), dtype=np.int64)
  holders: list[list[int]] = [[] for _ in classes]
  for k in range(num_clients):
    order = np.lexsort((rng.random(len(classes)), usage))  # Least used first.
    for j in order[:classes_per_client]:
      usage[j] += 1
      holders[j].append(k)
  chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
  for c, clients in zip(classes, holders):
    if not clients:
      continue
    idx = rng.permutation(np.flatnonzero(labels == c))
    if len(idx) < len(clients):
      raise ValueError(f'class {c} has {len(idx)} examples, too few for the '
                       f'{len(clients)} clients that need it')
    for k, part in zip(clients, np.array_split(idx, len(clients))):
      chunks[k].append(part)
  parts = [np.concatenate(ch) for ch in chunks]
  return _finish(labels, parts, test_labels, min_examples, rng,
                 f'{classes_per_client}-class')


def iid_partition(labels: np.ndarray,
                  num_clients: int,
                  *,
                  seed: int,
                  test_labels: np.ndarray | None = None,
                  min_examples: int = 0) -> Partition:
  """Uniformly random split into clients whose sizes differ by at most one."""
  labels = _check_labels(labels, 'labels')
  test_labels = None if test_labels is None else _check_labels(
      test_labels, 'test_labels')
  _check_common(num_clients, min_examples)
  rng = np.random.default_rng(seed)
  parts = np.array_split(rng.permutation(len(labels)), num_clients)
  return _finish(labels, parts, test_labels, min_examples, rng, 'iid')
