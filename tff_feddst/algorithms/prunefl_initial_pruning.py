"""PruneFL's first phase: initial pruning on one selected client, eagerly.

Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge
Devices", IEEE TNNLS 2022: before federated training, one selected client
trains the dense model on its own data and prunes it repeatedly with the
reconfiguration rule (`sparsity.prunefl.reconfigure`) until the model size
settles; federated learning then starts from that client's model and mask.

As the authors' code does it (jiangyuang/PruneFL,
`AdaptiveServer.initial_pruning`, `configs/*.py`), and where we differ:
* Importance: Σ over the steps since the last reconfiguration of g², the
  squared loss gradient of each step, taken through w ⊙ M, so a pruned weight
  has none and never returns in this phase (the authors' layers multiply by
  the mask in the forward pass). S0 = the same sum over the dense params.
* Cadence, in local steps (`prunefl.is_initial_reconfiguration_step`): the
  client's training accuracy is checked every 100 steps until it reaches
  1.5 / classes; the rule first runs 10 steps later, then every k =
  `interval_steps` steps (default 500); the phase stops when the density
  moved by at most 10% at each of five reconfigurations in a row
  (`prunefl.initial_pruning_settled`), or after `max_reconfigurations` × k
  steps (default 20 × 500), so at most that many reconfigurations; δ is
  constant. Theirs: rounds of one plain-SGD step on each of 10 stored
  batches of 20, the accuracy every 10 rounds, the rule every 50 rounds,
  at most 1000 rounds.
* A step is the clients' local step: a batch of the client's data (all of
  it, pass after pass, not 10 stored batches), the client optimizer (one
  state for the whole phase, as their one optimizer), weight decay, and the
  mask applied after every step. The time model is evaluated for a
  federated round of this client (E epochs of its data); theirs is the
  federated rounds' too (`TIME_CONSTANT`, E · coefficients).
* The density cap (`max_live`), when set, applies here too, so federated
  training starts within it as far as the protected core allows.
* It runs in Python on the building machine, not in TFF: it involves one
  client only and no federated step, and the process starts from its result
  (`initial_model_weights_fn`). Its traffic (the dense model down, the
  pruned one up, once) starts the process's cumulative byte counts
  (`algorithms.prunefl`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from absl import logging
import numpy as np
import tensorflow as tf

from tff_feddst.sparse.layout import ModelLayout
from tff_feddst.sparsity import prunefl


class InitialPruning(NamedTuple):
  """The selected client's result.

  Attributes:
    trainable, non_trainable: the model's weights (masks applied) and masks.
    dormant_kernels: per kernel, the value each pruned weight had when it
      was pruned (live entries: their current value).
    densities: the density after each reconfiguration.
    steps: local steps trained.
    first_reconfiguration: the step after which the rule first ran (None:
      the accuracy threshold was never reached).
  """
  trainable: list[np.ndarray]
  non_trainable: list[np.ndarray]
  dormant_kernels: list[np.ndarray]
  densities: list[float]
  steps: int
  first_reconfiguration: int | None


def _labels(batch):
  y = batch['y'] if isinstance(batch, Mapping) else batch[1]
  return tf.reshape(tf.cast(y, tf.int64), [-1])


def run(wrapped: tf.keras.Model, model: Any, layout: ModelLayout,
        data: tf.data.Dataset, *, optimizer, epochs: int,
        weight_decay: float, time_model: prunefl.TimeModel,
        max_decrease: float, max_live: int | None, interval_steps: int,
        max_reconfigurations: int, num_classes: int | None) -> InitialPruning:
  """Initial pruning of `wrapped` (TF-MOT-wrapped, masks all ones) in place.

  Args:
    wrapped: the model whose variables train (its masks are TF-MOT's).
    model: a `tff.learning` model on the same variables (its forward pass).
    layout: where the kernels and masks sit.
    data: the selected client's batched (shuffled) training data.
    optimizer: the client `tff.learning.optimizers.Optimizer`.
    epochs: the clients' local epochs (the time model's round).
    weight_decay: the clients' coupled L2.
    time_model: t_l and c.
    max_decrease: δ.
    max_live: the cap on live weights (None: none).
    interval_steps: k, local steps between reconfigurations.
    max_reconfigurations: at most this many; the phase trains at most this
      many × k local steps.
    num_classes: for the accuracy threshold (None: start at once).
  """
  trainable = list(wrapped.trainable_weights)
  non_trainable = list(wrapped.non_trainable_weights)
  kernels = [trainable[i] for i in layout.kernel_index]
  masks = [non_trainable[i] for i in layout.mask_index]
  mask_of = dict(zip(layout.kernel_index, masks))
  squares = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
             for v in trainable]
  specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
  batches = iter(data.repeat())  # One pass after another, as it shuffles.

  @tf.function
  def train_steps(n, opt_state):
    for _ in tf.range(n):
      batch = batches.get_next()
      with tf.GradientTape() as tape:
        loss = model.forward_pass(batch, training=True).loss
      grads = tape.gradient(loss, trainable)
      grads = [tf.convert_to_tensor(g) for g in grads]
      for i, (s, g) in enumerate(zip(squares, grads)):
        if i in mask_of:  # Through w ⊙ M: nothing reaches a pruned weight.
          g = g * mask_of[i]
        s.assign_add(tf.square(g))
      if weight_decay:
        grads = [g + weight_decay * w for g, w in zip(grads, trainable)]
      opt_state, updated = optimizer.next(opt_state, tuple(trainable),
                                          tuple(grads))
      for i, (v, u) in enumerate(zip(trainable, updated)):
        v.assign(u * mask_of[i] if i in mask_of else u)
    return opt_state

  @tf.function
  def accuracy():
    def add(state, batch):
      predictions = model.forward_pass(batch, training=False).predictions
      labels = _labels(batch)
      right = tf.reduce_sum(tf.cast(tf.equal(
          tf.argmax(predictions, axis=-1), labels), tf.int64))
      return state[0] + right, state[1] + tf.size(labels, tf.int64)
    right, total = data.reduce((tf.constant(0, tf.int64),
                                tf.constant(0, tf.int64)), add)
    return tf.cast(right, tf.float64) / tf.cast(tf.maximum(total, 1),
                                                 tf.float64)

  # The time model is a federated round's: E epochs of this client's data.
  examples = epochs * int(data.reduce(
      tf.constant(0, tf.int64), lambda n, b: n + tf.size(_labels(b),
                                                         tf.int64)))
  threshold = (prunefl.START_ACCURACY_FACTOR / num_classes
               if num_classes else 0.0)
  dormant = [k.numpy() for k in kernels]
  opt_state = optimizer.initialize(specs)  # One optimizer for the phase.
  densities, started, steps = [], None, 0
  limit = max_reconfigurations * interval_steps
  total = float(sum(layout.kernel_sizes))
  while steps < limit:
    if (started is None and steps % prunefl.INITIAL_CHECK_STEPS == 0 and
        float(accuracy()) >= threshold):
      started = steps
    target = min(prunefl.next_initial_event(steps, started, interval_steps),
                 limit)
    opt_state = train_steps(tf.constant(target - steps, tf.int64), opt_state)
    steps = target
    if not prunefl.is_initial_reconfiguration_step(steps, started,
                                                   interval_steps):
      continue
    weights = [k.numpy() for k in kernels]
    old = [m.numpy() > 0 for m in masks]
    dormant = [np.where(m, w, d) for m, w, d in zip(old, weights, dormant)]
    new = prunefl.reconfigure(
        weights, old, [s.numpy().astype(np.float64)
                       for s in (squares[i] for i in layout.kernel_index)],
        time_model.layer_times(examples),
        base_time=time_model.base_time(examples), max_decrease=max_decrease,
        base_importance=float(sum(
            np.sum(squares[i].numpy(), dtype=np.float64)
            for i in range(len(trainable)) if i not in mask_of)),
        max_live=max_live)
    for k, m, n, d in zip(kernels, masks, new, dormant):
      m.assign(n.astype(np.float32))
      k.assign(np.where(n, d, 0.0).astype(np.float32))
    for s in squares:
      s.assign(tf.zeros_like(s))
    densities.append(sum(int(n.sum()) for n in new) / total)
    logging.info('PruneFL initial pruning, step %d: density %.4f', steps,
                 densities[-1])
    if prunefl.initial_pruning_settled(densities):
      break
  first = (None if started is None or not densities else
           started + prunefl.INITIAL_ROUND_STEPS)
  return InitialPruning(
      [v.numpy() for v in trainable], [v.numpy() for v in non_trainable],
      dormant, densities, steps, first)
