"""FLASH's client DST: prune by |w|, regrow at random, between epochs (a `ClientHook`).

Babakniya et al., TMLR 2023 (`algorithms.flash`, rules in `sparsity.flash`):
after each local epoch but the last (E = 1: after the epoch) a client prunes
⌈p·nnz_l⌉ smallest |w| per layer and regrows as many at random, spread over
layers by mean |w|, with p the round's rate decayed linearly over the
epochs; a budgeted client keeps its per-layer counts
(`ClientRound.layer_limits`). The round's rate and whether clients run it
come from `sparsity.flash.client_schedule`.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tff_feddst.sparsity import flash as flash_lib
from tff_feddst.templates.hooks import base


@dataclasses.dataclass(frozen=True)
class FlashDST(base.ClientHook):
  """FLASH's client DST with `config` (rate, schedule, stage 1 only, seed)."""
  config: flash_lib.ClientDST
  # Per-layer counts move (stage 1, JMWST): every kernel is re-masked.
  remask_all_kernels = True

  def schedule(self, round_num):
    return flash_lib.client_schedule(round_num, self.config)

  def has_epoch_events(self, epochs: int) -> bool:
    # Always tagged by epoch, E = 1 too (its event comes after training).
    del epochs
    return True

  def initial_event_state(self):
    return tf.constant(0, tf.int64)  # The last event's epoch.

  def before_batch(self, trainer, client_round, epoch, event_state,
                   memory_state):
    # `epoch` is 0-based: the first batch of epoch e follows the end of
    # (1-based) epoch e, whose event comes first.
    del memory_state
    now = tf.logical_and(client_round.active, epoch > event_state)
    return tf.cond(
        now, lambda: (self._event(trainer, client_round, epoch), epoch)[1],
        lambda: event_state)

  def after_training(self, trainer, client_round):
    if trainer.epochs == 1:
      tf.cond(client_round.active,
              lambda: self._event(trainer, client_round, 1),
              lambda: tf.constant(False))

  def _event(self, trainer, client_round, event):
    """FLASH's DST event number `event` (`sparsity.flash.client_readjust`)."""
    seed = flash_lib.event_seed(self.config.seed, trainer.kernel_vars, event)
    result = flash_lib.client_readjust(
        [tf.convert_to_tensor(k) for k in trainer.kernel_vars],
        [tf.convert_to_tensor(m) for m in trainer.mask_vars],
        flash_lib.event_rate(client_round.rate, event, trainer.epochs), seed,
        limits=client_round.layer_limits)
    trainer.set_masks(result.masks, result.kernels)
    return tf.constant(True)
