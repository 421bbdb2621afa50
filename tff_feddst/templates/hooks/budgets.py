"""Per-client density budgets in the client work (a `ClientHook`).

With budgets (`sparsity.budgets`) the client data is `<data=B*,
budget=float32*>` (`budget_data_type`): right after decoding, a client keeps
per layer only the largest |w| of the received mask within its budget
(`sparsity.budgets_tf`), and trains, readjusts (the other hooks keep its
counts, `ClientRound.layer_limits`) and uploads that sub-mask (its mask bits
then travel and are counted). The measurements get, per budget group,
`budget/<density>/...`: clients, mean uplink bytes and live weights per
client, and clients above their budget in some layer.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.sparsity import budgets as budgets_lib
from tff_feddst.sparsity import budgets_tf
from tff_feddst.templates.hooks import base


def budget_data_type(data_type) -> tff.StructWithPythonType:
  """A budgeted client's data: `<data=B*, budget=float32*>`.

  The budget travels as a one-element dataset (`budget_dataset`):
  `tff.learning`'s client work templates take only sequences (or structures
  of them) as client data.
  """
  return tff.StructWithPythonType(
      [('data', data_type),
       ('budget', tff.SequenceType(tff.TensorType(np.float32)))],
      collections.OrderedDict)


def budget_dataset(density: float) -> tf.data.Dataset:
  """The `budget` entry of a client's data (see `budget_data_type`)."""
  return tf.data.Dataset.from_tensors(np.float32(density))


@dataclasses.dataclass(frozen=True)
class DensityBudgets(base.ClientHook):
  """Clients train within their budget; `densities` are the groups'."""
  densities: tuple[float, ...]
  # Every kernel gets a client sub-mask: none stays dense.
  remask_all_kernels = True

  def data_type(self, data_type):
    return budget_data_type(data_type)

  def split_data(self, data, client_round):
    client_round.client_input = data['budget'].reduce(
        tf.constant(0.0), lambda a, b: a + b)
    return data['data']

  def after_decode(self, trainer, client_round):
    masks, counts = budgets_tf.budget_masks(
        trainer.kernel_vars, client_round.received_masks,
        client_round.client_input)
    trainer.set_masks(masks)
    client_round.start_masks, client_round.layer_limits = masks, counts

  def client_stats(self, trainer, client_round, stats):
    """Per budget group (one-hot over the groups): clients, uplink bytes,
    live weights uploaded, and clients above their budget in some layer."""
    densities = tf.constant(self.densities, tf.float32)
    group = tf.argmin(tf.abs(densities - tf.cast(client_round.client_input,
                                                 tf.float32)))
    one_hot = tf.one_hot(group, len(self.densities), dtype=tf.int64)
    live = [tf.cast(tf.reduce_sum(m), tf.int32) for m in trainer.mask_vars]
    over = tf.reduce_any(tf.stack(
        [l > k for l, k in zip(live, client_round.layer_limits)]))
    return {'budget': collections.OrderedDict(
        clients=one_hot,
        uplink_bytes=one_hot * stats['uplink_bytes'],
        live_weights=one_hot * tf.cast(tf.add_n(live), tf.int64),
        over_budget_clients=one_hot * tf.cast(over, tf.int64))}

  def round_measurements(self, stats, clients, layout):
    """Per group label: clients, per-client means (NaN if none), over budget."""
    del clients, layout
    sums = stats['budget']
    out = collections.OrderedDict()
    for i, density in enumerate(self.densities):
      n = tf.cast(sums['clients'][i], tf.float64)

      def mean(total, n=n):
        return tf.where(n > 0, tf.cast(total, tf.float64) / tf.maximum(n, 1.0),
                        tf.constant(np.nan, tf.float64))

      out[budgets_lib.label(density)] = collections.OrderedDict(
          clients=sums['clients'][i],
          uplink_bytes_per_client=mean(sums['uplink_bytes'][i]),
          live_weights_per_client=mean(sums['live_weights'][i]),
          over_budget_clients=sums['over_budget_clients'][i])
    return {'budget': out}
