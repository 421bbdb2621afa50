"""PruneFL's first phase: initial pruning on one selected client, eagerly.

Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge
Devices", IEEE TNNLS 2022: before federated training, one selected client
trains the dense model on its own data and prunes it repeatedly with the
reconfiguration rule (`sparsity.prunefl.reconfigure`) until the model size
settles; federated learning then starts from that client's model and mask.

As the authors' code does it (jiangyuang/PruneFL,
`AdaptiveServer.initial_pruning`), and where we differ:
* Importance: Σ over the steps since the last reconfiguration of g², the
  squared loss gradient of each step, taken through w ⊙ M, so a pruned weight
  has none and never returns in this phase (the authors' layers multiply by
  the mask in the forward pass). S0 = the same sum over the dense params.
* Reconfigurations start once the client's training accuracy reaches 1.5 /
  classes, and the phase stops when the density moved by at most 10% at each
  of five reconfigurations in a row (`prunefl.initial_pruning_settled`), or
  after `max_rounds` rounds; δ is constant.
* A round here is one federated round's worth of the client's local work:
  E epochs over its whole dataset with the client optimizer (state reset each
  round, as in federated rounds), weight decay, and the mask applied after
  every step; the rule runs after every round once started. (The authors:
  one plain-SGD step on each of 10 stored batches per round, a
  reconfiguration every 50 rounds, at most 1000 rounds.) The time model is
  evaluated for a federated round of this client (its examples processed per
  round).
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
    rounds: rounds of local training run.
    first_reconfiguration: the round (from 0) after which the rule first ran
      (None: the accuracy threshold was never reached).
  """
  trainable: list[np.ndarray]
  non_trainable: list[np.ndarray]
  dormant_kernels: list[np.ndarray]
  densities: list[float]
  rounds: int
  first_reconfiguration: int | None


def _labels(batch):
  y = batch['y'] if isinstance(batch, Mapping) else batch[1]
  return tf.reshape(tf.cast(y, tf.int64), [-1])


def run(wrapped: tf.keras.Model, model: Any, layout: ModelLayout,
        data: tf.data.Dataset, *, optimizer, epochs: int,
        weight_decay: float, time_model: prunefl.TimeModel,
        max_decrease: float, max_live: int | None, max_rounds: int,
        num_classes: int | None) -> InitialPruning:
  """Initial pruning of `wrapped` (TF-MOT-wrapped, masks all ones) in place.

  Args:
    wrapped: the model whose variables train (its masks are TF-MOT's).
    model: a `tff.learning` model on the same variables (its forward pass).
    layout: where the kernels and masks sit.
    data: the selected client's batched (shuffled) training data.
    optimizer: the client `tff.learning.optimizers.Optimizer`.
    epochs, weight_decay: the clients' local training.
    time_model: t_l and c.
    max_decrease: δ.
    max_live: the cap on live weights (None: none).
    max_rounds: rounds of local training at most.
    num_classes: for the accuracy threshold (None: reconfigure from the first
      round on).
  """
  trainable = list(wrapped.trainable_weights)
  non_trainable = list(wrapped.non_trainable_weights)
  kernels = [trainable[i] for i in layout.kernel_index]
  masks = [non_trainable[i] for i in layout.mask_index]
  mask_of = dict(zip(layout.kernel_index, masks))
  squares = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
             for v in trainable]
  specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)

  @tf.function
  def train_round():
    def step(state, batch):
      examples, opt_state = state
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
      return examples + tf.size(_labels(batch), tf.int64), opt_state

    return data.repeat(epochs).reduce(
        (tf.constant(0, tf.int64), optimizer.initialize(specs)), step)[0]

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

  threshold = (prunefl.START_ACCURACY_FACTOR / num_classes
               if num_classes else 0.0)
  dormant = [k.numpy() for k in kernels]
  densities, started, rounds = [], None, 0
  total = float(sum(layout.kernel_sizes))
  for r in range(max_rounds):
    if started is None and float(accuracy()) >= threshold:
      started = r
    examples = int(train_round())
    rounds = r + 1
    if started is None:
      continue
    weights = [k.numpy() for k in kernels]
    old = [m.numpy() > 0 for m in masks]
    dormant = [np.where(m, w, d) for m, w, d in zip(old, weights, dormant)]
    new = prunefl.reconfigure(
        weights, old, [s.numpy().astype(np.float64)
                       for s in (squares[i] for i in layout.kernel_index)],
        time_model.layer_times(examples),
        base_time=time_model.base_time(examples),
        max_decrease=max_decrease, base_importance=float(sum(
            np.sum(squares[i].numpy(), dtype=np.float64)
            for i in range(len(trainable)) if i not in mask_of)),
        max_live=max_live)
    for k, m, n, d in zip(kernels, masks, new, dormant):
      m.assign(n.astype(np.float32))
      k.assign(np.where(n, d, 0.0).astype(np.float32))
    for s in squares:
      s.assign(tf.zeros_like(s))
    densities.append(sum(int(n.sum()) for n in new) / total)
    logging.info('PruneFL initial pruning, round %d: density %.4f', r,
                 densities[-1])
    if prunefl.initial_pruning_settled(densities):
      break
  return InitialPruning(
      [v.numpy() for v in trainable], [v.numpy() for v in non_trainable],
      dormant, densities, rounds, started)
