"""SparsyFed's end-of-round global prune (a `ClientHook`).

Guastella et al., ICLR 2025 (`algorithms.sparsyfed`): after its local
epochs a client keeps only the `keep` largest |w| over all masked kernels
together (`sparsity.global_magnitude`) and uploads that mask. The clients
receive the server's union mask, so the measurements add
`downlink_density`, the density of the model they received.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tff_feddst.sparsity import global_magnitude
from tff_feddst.templates.hooks import base


def _live(masks):
  return tf.add_n([tf.cast(tf.reduce_sum(m), tf.int64) for m in masks])


@dataclasses.dataclass(frozen=True)
class SparsyFedGlobalPrune(base.ClientHook):
  """Keeps the `keep` largest |w| over all masked kernels after training."""
  keep: int
  # The received mask changes every round: re-apply it on every kernel.
  remask_all_kernels = True

  def after_training(self, trainer, client_round):
    del client_round
    trainer.set_masks(global_magnitude.global_magnitude_masks(
        [tf.convert_to_tensor(k) for k in trainer.kernel_vars],
        [tf.convert_to_tensor(m) for m in trainer.mask_vars], self.keep))

  def client_stats(self, trainer, client_round, stats):
    del trainer, stats
    return {'received_live_weights': _live(client_round.received_masks)}

  def round_measurements(self, stats, clients, layout):
    # The density of the global model the clients received (the union
    # mask); their uploads keep `keep` weights each.
    return {'downlink_density': tf.cast(
        stats['received_live_weights'], tf.float64) / (
            clients * float(sum(layout.kernel_sizes)))}
