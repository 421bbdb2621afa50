"""PruneFL's importance upload (a `ClientHook`).

Jiang et al., IEEE TNNLS 2022 (`algorithms.prunefl`): clients never change
their mask; they sum the dense loss gradient of every trainable param over
their local steps, and upload its square every round besides the sparse
payload (`sparse.ImportanceUpload`): per kernel weight, live or not,
densely; for the dense params only the sum (PruneFL's S0). The server adds
them up until its next reconfiguration (`templates.prunefl_finalizer`): the
authors' clients keep that sum themselves, ours are sampled and keep
nothing, so the uplink counts the importance every round.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tff_feddst.sparse import codec
from tff_feddst.sparsity import prunefl_tf
from tff_feddst.templates.hooks import base


class GradientSum:
  """Σ over the local steps of the dense loss gradient of every trainable
  variable (PruneFL's importance, before squaring), in the loop's state."""

  def __init__(self, trainable_vars):
    self._vars = trainable_vars
    self.indices = tuple(range(len(trainable_vars)))

  def initial(self):
    return (tf.constant(0, tf.int64),
            tuple(tf.zeros(v.shape, v.dtype) for v in self._vars))

  def remember(self, recent, grads):
    step, sums = recent
    return step + 1, tuple(s + g for s, g in zip(sums, grads))


@dataclasses.dataclass(frozen=True)
class PruneFLImportance(base.ClientHook):
  """Uploads (Σ_steps g)² besides the payload; the server reconfigures
  every `interval` rounds (the schedule's `active`)."""
  interval: int
  remask_all_kernels = True  # The server's reconfigurations move the masks.

  def schedule(self, round_num):
    return tf.constant(0.0), prunefl_tf.is_reconfiguration_round(
        round_num, self.interval)

  def gradient_memory(self, trainer):
    return GradientSum(trainer.trainable)

  def upload(self, trainer, client_round, payload):
    """The payload plus (Σ_steps g)², unweighted (the aggregator weights by
    the examples processed)."""
    squares = [tf.square(g) for g in client_round.memory_state[1]]
    layout = trainer.layout
    kernel_index = set(layout.kernel_index)
    importance = [tf.reshape(squares[i], [-1]) for i in layout.kernel_index]
    dense = [tf.reduce_sum(s) for i, s in enumerate(squares)
             if i not in kernel_index]
    base_importance = tf.add_n(dense) if dense else tf.constant(0.0)
    return codec.ImportanceUpload(payload, importance,
                                  tf.reshape(base_importance, [1]))
