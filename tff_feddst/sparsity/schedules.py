"""When clients readjust their masks, and by how much (FedDST Sec. 3).

Rounds are numbered from 0. The readjustment fraction follows a cosine decay
α_r = α/2 · (1 + cos(π r / R_end)) for r < R_end and 0 afterwards (`cosine`),
or stays α until R_end (`constant`). Clients readjust in rounds
r = 1, 1 + R_adj, 1 + 2 R_adj, ... while α_r > 0: the FedDST reference tests
`(r - 1) % R_adj == 0`, so the first readjustment comes after the model has
trained one round on its initial magnitude mask rather than on the untrained
random init.

The functions accept Python numbers or scalar tensors, so the same code serves
tests, the Python program and the TFF computations.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tff_feddst import choices

SCHEDULES = choices.READJUSTMENT_SCHEDULES


def check_schedule(schedule: str) -> None:
  if schedule not in SCHEDULES:
    raise ValueError(f'Unknown readjustment schedule {schedule!r}; expected '
                     f'one of {SCHEDULES}.')


def readjustment_fraction(round_num, alpha: float, end_round: int,
                          schedule: str = 'cosine'):
  """α_r: the fraction of live weights a client prunes and regrows."""
  check_schedule(schedule)
  r = tf.cast(round_num, tf.float32)
  if end_round <= 0:
    return tf.constant(0.0)
  if schedule == 'cosine':
    value = alpha / 2.0 * (1.0 + tf.cos(math.pi * r / float(end_round)))
  else:
    value = tf.constant(alpha, tf.float32)
  return tf.where(r < float(end_round), value, 0.0)


def is_readjustment_round(round_num, alpha: float, end_round: int,
                          rounds_between: int, schedule: str = 'cosine'):
  """True in rounds 1, 1 + R_adj, ... while α_r > 0."""
  if rounds_between < 1:
    raise ValueError(f'rounds_between_readjustments must be >= 1, got '
                     f'{rounds_between}.')
  r = tf.cast(round_num, tf.int64)
  on_cadence = tf.logical_and(
      r >= 1, tf.equal(tf.math.floormod(r - 1, rounds_between), 0))
  return tf.logical_and(
      on_cadence,
      readjustment_fraction(round_num, alpha, end_round, schedule) > 0.0)


def sparsity_at_round(round_num: int, sparsity: float,
                      final_sparsity: float | None, end_round: int) -> float:
  """Target sparsity of the global mask made in round r (0-based).

  Moves linearly from `sparsity` (r = 0) to `final_sparsity` (r >= R_end), as
  the reference's `--final-sparsity`; constant when `final_sparsity` is None.
  Python numbers only: the server uses a table of the exact live counts.
  """
  if final_sparsity is None:
    return sparsity
  progress = 1.0 if end_round <= 0 else min(round_num / end_round, 1.0)
  return sparsity + (final_sparsity - sparsity) * progress
