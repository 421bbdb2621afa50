"""FedDST's client readjustment: prune by |w|, regrow by |gradient| (a `ClientHook`).

Bibikar et al., "Federated Dynamic Sparse Training", AAAI 2022, Alg. 1. On
readjustment rounds (`sparsity.schedules`), after local epoch k (default
E), a client prunes α_r of its live weights by |w| and regrows as many by
the |dense gradient| of its last mini-batch(es) (`sparsity.masks.readjust`),
then trains the remaining E − k epochs on the new mask; the optimizer state
carries over, as in the reference's client. A budgeted client keeps its
per-layer counts (prune and regrow take as many).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tff_feddst.sparsity import masks as masks_lib
from tff_feddst.sparsity import schedules
from tff_feddst.templates.hooks import base


class RegrowthMemory:
  """The dense kernel gradients of the last `n` training batches, in the loop.

  Regrowth ranks dead weights by the summed dense loss gradient of the last
  `n` batches (before their step; FedDST/RigL's criterion). Carried in the
  training loop's state: the last gradient itself for n = 1, a ring buffer
  for more.
  """

  def __init__(self, kernel_vars, n: int, indices=()):
    self._kernels = kernel_vars
    self.n = n
    self.indices = tuple(indices)  # Of the kernels among the trainables.

  def initial(self):
    shape = [self.n] if self.n > 1 else []
    return (tf.constant(0, tf.int64),
            tuple(tf.zeros(shape + k.shape.as_list(), k.dtype)
                  for k in self._kernels))

  def remember(self, recent, kernel_grads):
    if self.n == 1:
      return recent[0], tuple(kernel_grads)
    step, buffers = recent
    slot = tf.math.floormod(step, self.n)
    buffers = tuple(tf.tensor_scatter_nd_update(b, [[slot]], g[None])
                    for b, g in zip(buffers, kernel_grads))
    return step + 1, buffers

  def summed(self, recent):
    return [tf.reduce_sum(r, axis=0) if self.n > 1 else r for r in recent[1]]


@dataclasses.dataclass(frozen=True)
class FedDSTReadjustment(base.ClientHook):
  """When and how much clients readjust their masks (`sparsity.schedules`).

  `after_epoch` k (1 <= k <= E, None = E) is the local epoch after which a
  client readjusts (the reference's `--pruning-begin` + 1): with k < E it
  trains the remaining E − k epochs on its new mask, so regrown weights reach
  the server trained instead of at exactly 0, and can compete there.
  """
  fraction: float = 0.0               # α
  rounds_between: int = 10            # R_adj
  end_round: int = 0                  # R_end
  schedule_name: str = 'cosine'
  gradient_batches: int = 1           # last batches summed for regrowth
  after_epoch: int | None = None      # k; None: after the last epoch

  def schedule(self, round_num):
    rate = schedules.readjustment_fraction(
        round_num, self.fraction, self.end_round, self.schedule_name)
    active = schedules.is_readjustment_round(
        round_num, self.fraction, self.end_round, self.rounds_between,
        self.schedule_name)
    return tf.cast(rate, tf.float32), active

  def gradient_memory(self, trainer):
    if self.fraction <= 0:  # Never readjusts: keeps no gradient.
      return None
    return RegrowthMemory(trainer.kernel_vars, self.gradient_batches,
                          indices=trainer.layout.kernel_index)

  def has_epoch_events(self, epochs: int) -> bool:
    return (self.after_epoch or epochs) < epochs

  def initial_event_state(self):
    return tf.constant(False)  # Readjusted already.

  def before_batch(self, trainer, client_round, epoch, event_state,
                   memory_state):
    if trainer.memory is None:
      return event_state

    def readjust_now():
      self._readjust(trainer, client_round, memory_state)
      return tf.constant(True)

    now = tf.logical_and(
        tf.logical_and(client_round.active, tf.logical_not(event_state)),
        epoch >= self.after_epoch)
    return tf.cond(now, readjust_now, lambda: event_state)

  def after_training(self, trainer, client_round):
    if trainer.memory is None or self.has_epoch_events(trainer.epochs):
      return

    def readjust_now():
      self._readjust(trainer, client_round, client_round.memory_state)
      return tf.constant(True)

    tf.cond(client_round.active, readjust_now, lambda: tf.constant(False))

  def _readjust(self, trainer, client_round, memory_state):
    results = [masks_lib.readjust(k, g, m, client_round.rate)
               for k, m, g in zip(trainer.kernel_vars, trainer.mask_vars,
                                  trainer.memory.summed(memory_state))]
    trainer.set_masks([r.mask for r in results], [r.weights for r in results])
