"""The loss argument of the builders and the evaluator: a Keras loss or a
no-arg callable returning one (as tff.learning's `loss_fn`)."""

from __future__ import annotations

import tensorflow as tf


def loss_instance(loss_fn) -> tf.keras.losses.Loss:
  """`loss_fn` as a Keras loss; a clear TypeError for anything else."""
  loss = loss_fn if isinstance(loss_fn, tf.keras.losses.Loss) else loss_fn()
  if not isinstance(loss, tf.keras.losses.Loss):
    raise TypeError('loss_fn must be a tf.keras.losses.Loss or a no-arg '
                    f'callable returning one; got {loss_fn!r}.')
  return loss
