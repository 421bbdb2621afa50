"""Evaluation of the global model in plain Keras, in this process (no TFF).

Two numbers matter in the FedDST paper: the accuracy of the global model on
the whole (centralized) test set, and the mean over clients of its accuracy on
each client's own test split (unweighted: every client with a test split counts
once). The per-client accuracies come from a single `predict` over all client
test examples concatenated, split by client with numpy.

With per-client density budgets, each budget group also gets the mean client
accuracy over *its* clients of the global model pruned to the group's budget
by the clients' own rule (per layer, the largest |w| of the global mask;
`sparsity.budgets`): the sub-model those devices would run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import data as data_lib
from tff_feddst import models as models_lib
from tff_feddst.sparsity import budgets as budgets_lib
from tff_feddst.sparsity import budgets_tf


def client_test_arrays(test: tff.simulation.datasets.ClientData
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """All client test examples concatenated: (x, y, client index per example, #clients)."""
  xs, ys, segments = [], [], []
  for index, cid in enumerate(test.client_ids):
    for batch in test.create_tf_dataset_for_client(cid).batch(
        4096).as_numpy_iterator():
      xs.append(batch['x'])
      ys.append(batch['y'])
      segments.append(np.full(len(batch['y']), index, np.int64))
  if not xs:
    raise ValueError('no client has test examples')
  return (np.concatenate(xs), np.concatenate(ys), np.concatenate(segments),
          len(test.client_ids))


def mean_client_accuracy(correct: np.ndarray, segments: np.ndarray,
                         num_clients: int) -> tuple[float, int]:
  """Unweighted mean over clients of their accuracy, and the clients counted."""
  counts = np.bincount(segments, minlength=num_clients)
  hits = np.bincount(segments, weights=correct.astype(np.float64),
                     minlength=num_clients)
  present = counts > 0
  return float(np.mean(hits[present] / counts[present])), int(present.sum())


class Evaluator:
  """Evaluates `ModelWeights` of a process on the test data of `federated_data`.

  Calling it returns {'test/accuracy', 'test/loss' (global model, central test
  set), 'test/client_mean_accuracy', 'test/clients'}; with `budgets` and
  `assignment` ({client id: density}) also, per group,
  'test/budget/<density>/client_mean_accuracy' and '.../clients'.
  """

  def __init__(self, federated_data: data_lib.FederatedData,
               model_fn: Callable[[], tf.keras.Model], loss_fn: Any, *,
               batch_size: int = 1024,
               budgets: Sequence[budgets_lib.Budget] | None = None,
               assignment: Mapping[str, float] | None = None):
    self._model_fn = model_fn
    self._batch_size = batch_size
    self._budgets = tuple(budgets or ())
    test_ids = list(federated_data.test.client_ids)
    # Budget of each test client (by index; NaN: no budget assigned).
    self._client_budget = np.array(
        [(assignment or {}).get(cid, np.nan) for cid in test_ids])
    self._x_central, self._y_central = federated_data.central_test
    self._x_clients, self._y_clients, self._segments, self._num_clients = (
        client_test_arrays(federated_data.test))
    loss = models_lib.loss_instance(loss_fn)
    self._model = model_fn()
    self._model.compile(
        loss=loss,
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')])
    logging.info('Evaluation: %d central test examples, %d client test '
                 'examples over %d clients', len(self._y_central),
                 len(self._y_clients), self._num_clients)

  def __call__(self, weights: tff.learning.models.ModelWeights
               ) -> dict[str, float | int]:
    stripped = models_lib.keras_model_from_weights(self._model_fn, weights)
    self._model.set_weights(stripped.get_weights())
    central = self._model.evaluate(
        self._x_central, self._y_central, batch_size=self._batch_size,
        verbose=0, return_dict=True)
    logits = self._model.predict(self._x_clients, batch_size=self._batch_size,
                                 verbose=0)
    correct = np.argmax(logits, axis=-1) == self._y_clients
    client_mean, clients = mean_client_accuracy(correct, self._segments,
                                                self._num_clients)
    out = {
        'test/accuracy': float(central['accuracy']),
        'test/loss': float(central['loss']),
        'test/client_mean_accuracy': client_mean,
        'test/clients': clients,
    }
    for budget in self._budgets:
      out.update(self._budget_group(weights, budget.density))
    return out

  def _budget_group(self, weights, density: float) -> dict[str, float | int]:
    """Mean client accuracy of the group's clients on its pruned sub-model."""
    prefix = f'test/budget/{budgets_lib.label(density)}'
    members = np.flatnonzero(self._client_budget == density)
    rows = np.isin(self._segments, members)
    if not rows.any():
      return {f'{prefix}/client_mean_accuracy': float('nan'),
              f'{prefix}/clients': 0}
    self._model.set_weights(budget_model(self._model_fn, weights,
                                         density).get_weights())
    logits = self._model.predict(self._x_clients[rows],
                                 batch_size=self._batch_size, verbose=0)
    correct = np.argmax(logits, axis=-1) == self._y_clients[rows]
    mean, clients = mean_client_accuracy(correct, self._segments[rows],
                                         self._num_clients)
    return {f'{prefix}/client_mean_accuracy': mean, f'{prefix}/clients': clients}


def budget_model(model_fn: Callable[[], tf.keras.Model],
                 weights: tff.learning.models.ModelWeights,
                 density: float) -> tf.keras.Model:
  """The plain Keras model of `weights` pruned to a client budget `density`
  (`sparsity.budgets_tf`: the clients' rule, per layer the largest |w| of
  the global mask)."""
  model = models_lib.keras_model_from_weights(model_fn, weights, strip=False)
  pairs = models_lib.masked_kernels(model)
  subs, _ = budgets_tf.budget_masks(
      [tf.convert_to_tensor(p.kernel) for p in pairs],
      [tf.convert_to_tensor(p.mask) for p in pairs],
      tf.constant(density, tf.float32))
  for p, sub in zip(pairs, subs):
    p.mask.assign(sub)
    p.kernel.assign(p.kernel.numpy() * sub.numpy())
  return models_lib.strip(model)
