"""A `tff.program` data source of client datasets, for TFF's program logic.

`ClientDatasetsSource` serves one `tf.data.Dataset` per client, as
`tff.program.DatasetDataSource` does (clients sampled uniformly at random),
but its iterator survives `copy.deepcopy`: TFF 0.87's
`tff.learning.programs.train_model` deep-copies the data iterator, which
fails for `DatasetDataSource`'s ('cannot pickle Graph': a dataset holds its
graph). Datasets are immutable, so a copy of this iterator shares them.

Processes with `client_density_budgets` take each client's data as
`<data=B*, budget=float32*>` and cannot run under TFF 0.87's program context:
`tff.program.NativeFederatedContext` pairs the list of clients with the
struct's fields (`native_platform._materialize_structure_of_references`
recurses into the member type with the whole client list), so no value of
that type reaches the computation (`examples/tff_program.py` refuses them).
"""

from __future__ import annotations

from collections.abc import Sequence
import random

import tensorflow as tf
import tensorflow_federated as tff
# pylint: disable=g-direct-tensorflow-import
from tensorflow_federated.python.program import serialization_utils
# pylint: enable=g-direct-tensorflow-import


class ClientDatasetsIterator(tff.program.FederatedDataSourceIterator):
  """Selects clients uniformly at random; serializable for program state."""

  def __init__(self, datasets: Sequence[tf.data.Dataset]):
    if not datasets:
      raise ValueError('Expected at least one client dataset.')
    spec = datasets[0].element_spec
    if any(d.element_spec != spec for d in datasets):
      raise ValueError('Every client dataset must have the same element_spec.')
    self._datasets = list(datasets)
    self._federated_type = tff.FederatedType(
        tff.SequenceType(tff.types.tensorflow_to_type(spec)), tff.CLIENTS)

  @property
  def federated_type(self) -> tff.FederatedType:
    return self._federated_type

  def select(self, k: int | None = None) -> list:
    if not isinstance(k, int) or not 0 < k <= len(self._datasets):
      raise ValueError(f'k must be an int in [1, {len(self._datasets)}] (the '
                       f'clients), got {k!r}.')
    return random.sample(self._datasets, k)

  def to_bytes(self) -> bytes:
    return serialization_utils.pack_sequence(serialization_utils.pack_dataset,
                                             self._datasets)

  def __deepcopy__(self, memo) -> 'ClientDatasetsIterator':
    del memo
    return type(self)(self._datasets)  # Datasets are immutable.

  @classmethod
  def from_bytes(cls, buffer: bytes) -> 'ClientDatasetsIterator':
    datasets, _ = serialization_utils.unpack_sequence_from(
        serialization_utils.unpack_dataset_from, buffer)
    return cls(datasets)

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, ClientDatasetsIterator):
      return NotImplemented
    return (len(self._datasets) == len(other._datasets) and
            all(list(a) == list(b) for a, b in
                zip(self._datasets, other._datasets)))


class ClientDatasetsSource(tff.program.FederatedDataSource):
  """One dataset per client (see the module doc)."""

  def __init__(self, datasets: Sequence[tf.data.Dataset]):
    self._iterator = ClientDatasetsIterator(datasets)

  @property
  def federated_type(self) -> tff.FederatedType:
    return self._iterator.federated_type

  def iterator(self) -> ClientDatasetsIterator:
    return self._iterator

