"""Masked local training as a `ClientWorkProcess`: the core every sparse method shares.

`(<S@SERVER, P@CLIENTS, {B*}@CLIENTS> -> <S@SERVER, ClientResult@CLIENTS, M@SERVER>)`

Each client decodes the sparse payload P (weights + mask), trains E epochs of
SGD with the mask re-applied after every optimizer step (so masked weights
stay exactly 0), optionally with weight decay and the FedProx term, and
uploads the sparse payload (`sparse.SparsePayload`): live values (float32 or
16-bit), its mask packed to bits only if it changed, and the dense params.
The client optimizer's state lives for one round. Bytes are counted from the
encoded payloads themselves.

What a method does besides (FedDST's readjustment, FLASH's DST, SparsyFed's
global prune, PruneFL's importance upload, per-client density budgets) is a
`hooks.ClientHook` its builder passes in (`templates/hooks/`); this module
imports no method's rules. The server-side state counts rounds (which drive
the hooks' schedule) and the cumulative bytes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.learning import loop_builder

from tff_feddst.sparse import codec
from tff_feddst.sparse.layout import ModelLayout
from tff_feddst.sparsity import masks as masks_lib
from tff_feddst.templates.hooks import base as hooks_base


@dataclasses.dataclass(frozen=True)
class LocalTrainingConfig:
  epochs: int = 1
  weight_decay: float = 0.0           # added to the gradient: g + λ w
  prox_mu: float = 0.0                # FedProx: g + μ (w - w_global)
  upload_dtype: tf.DType = tf.float32  # of the uploaded live values/params
  # XLA-compile each training step (forward, backward, L2/prox, optimizer
  # update, re-mask). Off by default: on the project's 2-core CPU it is
  # slower for the paper CNN (benchmarks/floor.py, docs/performance.md).
  jit_compile: bool = False


def _batch_xy(batch):
  if isinstance(batch, Mapping):
    return batch['x'], batch['y']
  return batch[0], batch[1]


def _dense(g, v):
  if isinstance(g, tf.IndexedSlices):  # Embeddings.
    g = tf.ensure_shape(tf.convert_to_tensor(g), v.shape)
  return g


def _one(hooks, method: str, what: str):
  """The one hook overriding `method` (None if none); two are refused."""
  found = [h for h in hooks
           if getattr(type(h), method) is not getattr(hooks_base.ClientHook,
                                                      method)]
  if len(found) > 1:
    raise ValueError(f'At most one client hook may have {what}; got '
                     f'{[type(h).__name__ for h in found]}.')
  return found[0] if found else None


class MaskedTrainer:
  """One client's round, in named steps: decode → masked local training →
  encode → statistics, with the hooks called in between. Built inside the
  client computation; `client_update` is its tf.function.

  `models_fn` returns (the TF-MOT-wrapped Keras model, a tff.learning model
  whose forward pass runs on the same trainable variables). `always_dense`
  lists, per kernel, whether its mask keeps every weight in every round
  (default: from `layout.live_counts`).
  """

  def __init__(self, models_fn: Callable, layout: ModelLayout,
               optimizer: tff.learning.optimizers.Optimizer,
               training: LocalTrainingConfig,
               hooks: Sequence[hooks_base.ClientHook], loop: Callable,
               always_dense=None):
    keras_model, self.model = models_fn()
    self.layout = layout
    self.hooks = tuple(hooks)
    if any(h.remask_all_kernels for h in self.hooks):
      always_dense = [False] * layout.num_kernels
    self.optimizer = optimizer
    self.training = training
    self.loop = loop
    self.epochs = training.epochs
    self.trainable = list(keras_model.trainable_weights)
    self.non_trainable = list(keras_model.non_trainable_weights)
    self.kernel_vars = [self.trainable[i] for i in layout.kernel_index]
    self.mask_vars = [self.non_trainable[i] for i in layout.mask_index]
    if always_dense is None:
      always_dense = [live == size for live, size in
                      zip(layout.live_counts, layout.kernel_sizes)]
    # Kernels whose mask has every weight live (a layer ERK keeps dense, or
    # S=0) need no re-masking: no hook changes them (FedDST regrows only
    # among dead weights), so they skip the per-step multiply.
    self.remasked = {i: m for i, m, dense in zip(
        layout.kernel_index, self.mask_vars, always_dense) if not dense}
    keeper = _one(self.hooks, 'gradient_memory', 'a gradient memory')
    self.memory = keeper.gradient_memory(self) if keeper else None
    self.client_update = tf.function(self._client_update)

  def set_masks(self, masks, kernels=None) -> None:
    """Assigns new masks and their kernels (default: the kernels masked)."""
    for i, (kernel, mask_var, mask) in enumerate(zip(
        self.kernel_vars, self.mask_vars, masks)):
      mask_var.assign(mask)
      kernel.assign(kernel * mask if kernels is None else kernels[i])

  # Decode.
  def _load_payload(self, payload):
    """Sets the model's variables from the payload; returns the received masks."""
    layout = self.layout
    received_masks = [codec.decode_mask(p, s) for p, s in
                      zip(payload.masks, layout.kernel_shapes)]
    kernels = [codec.scatter_values(v, m)
               for v, m in zip(payload.values, received_masks)]
    new_trainable, new_non_trainable = layout.merge(
        kernels, received_masks, payload.dense)
    for v, x in zip(self.trainable, new_trainable):
      v.assign(x)
    for v, x in zip(self.non_trainable, new_non_trainable):
      v.assign(x)
    return received_masks

  # Masked local training.
  def _regularized(self, g, w, w0):
    # One fused expression per tensor: coupled L2 (λ w) + FedProx μ (w - w0).
    if self.training.weight_decay:
      g = g + self.training.weight_decay * w
    if self.training.prox_mu:
      g = g + self.training.prox_mu * (w - w0)
    return g

  def _step_fn(self, global_trainable, step_masks):
    """One SGD step on a batch, re-masked; feeds the gradient memory."""
    trainable, memory = self.trainable, self.memory

    def step(batch, opt_state, recent):
      with tf.GradientTape() as tape:
        output = self.model.forward_pass(batch, training=True)
      grads = tape.gradient(output.loss, trainable)
      if memory is not None:
        recent = memory.remember(recent, [_dense(grads[i], trainable[i])
                                          for i in memory.indices])
      if self.training.weight_decay or self.training.prox_mu:
        grads = [self._regularized(g, w, w0) for g, w, w0 in
                 zip(grads, trainable, global_trainable)]
      opt_state, updated = self.optimizer.next(opt_state, tuple(trainable),
                                               tuple(grads))
      # Re-mask as part of the update: masked weights stay exactly 0.
      for v, u, m in zip(trainable, updated, step_masks):
        v.assign(u if m is None else u * m)
      return opt_state, recent

    if self.training.jit_compile:
      step = tf.function(step, jit_compile=True)

    def reduce_fn(state, batch):
      num_examples, opt_state, recent = state
      opt_state, recent = step(batch, opt_state, recent)
      num_examples += tf.cast(tf.shape(_batch_xy(batch)[1])[0], tf.int64)
      return num_examples, opt_state, recent

    return reduce_fn

  def _step_masks(self):
    # Read the masks once per loop when they are fixed, once per step when a
    # hook moves them within the loop.
    return [tf.identity(self.remasked[i]) if i in self.remasked else None
            for i in range(len(self.trainable))]

  def _tagged_epochs(self, data):
    # One pipeline for all E epochs, each batch tagged with its epoch: two
    # loops over the data (epochs 1..k, then k+1..E) were not reproducible in
    # TFF's worker: the second loop's shuffle seed was drawn in a race.
    # Zipped, not `data.map(lambda batch: ...)`: map unpacks a tuple element
    # (Keras's `(x, y)`) into several arguments.
    return tf.data.Dataset.range(self.epochs).flat_map(
        lambda e: tf.data.Dataset.zip(
            (tf.data.Dataset.from_tensors(e).repeat(), data)))

  def _train(self, data, client_round: hooks_base.ClientRound):
    """E local epochs, the hooks' events before the batches that want them;
    returns the examples seen (the memory's state goes to `client_round`)."""
    global_trainable = [tf.identity(v) for v in self.trainable]
    memory = self.memory

    def initial_state():
      specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in self.trainable)
      return (tf.constant(0, tf.int64), self.optimizer.initialize(specs),
              memory.initial() if memory is not None else ())

    eventful = [h for h in self.hooks if h.has_epoch_events(self.epochs)]
    if not eventful:
      state = self.loop(self._step_fn(global_trainable, self._step_masks()),
                        data.repeat(self.epochs), initial_state)
    else:
      def reduce_fn(state, element):
        epoch, batch = element
        train_state, events = state[:3], state[3:]
        events = tuple(
            h.before_batch(self, client_round, epoch, e, train_state[2])
            for h, e in zip(eventful, events))
        step = self._step_fn(global_trainable, self._step_masks())
        return tuple(step(tuple(train_state), batch)) + events

      state = self.loop(
          reduce_fn, self._tagged_epochs(data),
          lambda: initial_state() + tuple(h.initial_event_state()
                                          for h in eventful))
    client_round.memory_state = state[2]
    return state[0]

  # Encode and count.
  def _stats(self, payload, upload, start_masks, hamming, num_examples):
    """Counts; FLOPs of the masks training started from (the received ones,
    or the client's budget sub-masks)."""
    layout = self.layout
    positions = tf.constant(layout.output_positions, tf.float64)
    dense_fwd_flops = 2.0 * float(np.dot(layout.kernel_sizes,
                                         layout.output_positions))
    live = tf.stack([tf.reduce_sum(tf.cast(m, tf.float64))
                     for m in start_masks])
    fwd_flops = 2.0 * tf.reduce_sum(live * positions)
    processed = tf.cast(num_examples, tf.float64)
    return collections.OrderedDict(
        clients=tf.constant(1, tf.int64),
        examples=num_examples,
        uplink_bytes=codec.payload_bytes(upload),
        downlink_bytes=codec.payload_bytes(payload),
        mask_hamming=hamming,
        live_weights=tf.add_n([tf.cast(tf.reduce_sum(m), tf.int64)
                               for m in self.mask_vars]),
        # Training FLOPs: forward + backward (~2x forward) per example
        # processed, multiply-adds of the prunable kernels only.
        client_flops=3.0 * processed * fwd_flops,
        client_dense_flops=3.0 * processed * dense_fwd_flops,
    )

  def _client_update(self, payload, data, rate, active):
    client_round = hooks_base.ClientRound(rate=rate, active=active)
    for hook in self.hooks:
      data = hook.split_data(data, client_round)
    client_round.received_masks = self._load_payload(payload)
    client_round.start_masks = client_round.received_masks
    for hook in self.hooks:
      hook.after_decode(self, client_round)
    num_examples = self._train(data, client_round)
    for hook in self.hooks:
      hook.after_training(self, client_round)
    hamming = tf.add_n([masks_lib.hamming_distance(m, r) for m, r in
                        zip(self.mask_vars, client_round.received_masks)])
    kernels, masks, dense = self.layout.split(self.trainable,
                                              self.non_trainable)
    upload = codec.encode(kernels, masks, dense, send_masks=hamming > 0,
                          dtype=self.training.upload_dtype)
    for hook in self.hooks:
      upload = hook.upload(self, client_round, upload)
    stats = self._stats(payload, upload, client_round.start_masks, hamming,
                        num_examples)
    for hook in self.hooks:
      stats.update(hook.client_stats(self, client_round, stats))
    result = tff.learning.templates.ClientResult(
        update=upload, update_weight=tf.cast(num_examples, tf.float32))
    return result, self.model.report_local_unfinalized_metrics(), stats


def build_masked_client_work(
    models_fn: Callable, layout: ModelLayout, payload_type, data_type, *,
    optimizer: tff.learning.optimizers.Optimizer,
    training: LocalTrainingConfig,
    hooks: Sequence[hooks_base.ClientHook] = (),
    loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
    always_dense=None,
    initial_bytes: tuple[int, int] = (0, 0),
    metrics_aggregator: Callable | None = None,
) -> tff.learning.templates.ClientWorkProcess:
  """The masked client work with `hooks`; `models_fn` builds the models anew.

  `data_type` is the batches' `B*`; the hooks may widen it (`data_type`,
  e.g. a density budget beside the batches). `initial_bytes` (uplink,
  downlink) start the cumulative counts: traffic before round 1 (PruneFL's
  initial pruning on one client). `metrics_aggregator` aggregates the
  clients' training metrics as in tff.learning (called with the metric
  finalizers and the unfinalized metrics' type); default: summed with the
  statistics, then finalized (`sum_then_finalize`'s result).
  """
  hooks = tuple(hooks)
  loop = loop_builder.build_training_loop(loop_implementation)
  for hook in hooks:
    data_type = hook.data_type(data_type)
  scheduler = _one(hooks, 'schedule', 'a schedule')

  with tf.Graph().as_default():
    _, model = models_fn()
    metric_finalizers = model.metric_finalizers()

  @tff.tensorflow.computation(payload_type, data_type, np.float32, np.bool_)
  def client_update_comp(payload, data, rate, active):
    trainer = MaskedTrainer(models_fn, layout, optimizer, training, hooks,
                            loop, always_dense)
    return trainer.client_update(payload, data, rate, active)

  @tff.tensorflow.computation
  def initial_state():
    return collections.OrderedDict(
        round_num=tf.constant(0, tf.int64),
        cumulative_uplink_bytes=tf.constant(initial_bytes[0], tf.int64),
        cumulative_downlink_bytes=tf.constant(initial_bytes[1], tf.int64))

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(initial_state, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(state_type)
  def schedule(state):
    if scheduler is None:
      return hooks_base.no_schedule()
    return scheduler.schedule(state['round_num'])

  metrics_type = client_update_comp.type_signature.result[1]
  stats_type = client_update_comp.type_signature.result[2]

  def round_step(state, stats, rate, active):
    """The next state and the round's measurements from the summed stats."""
    new_state = collections.OrderedDict(
        round_num=state['round_num'] + 1,
        cumulative_uplink_bytes=state['cumulative_uplink_bytes'] +
        stats['uplink_bytes'],
        cumulative_downlink_bytes=state['cumulative_downlink_bytes'] +
        stats['downlink_bytes'])
    clients = tf.maximum(tf.cast(stats['clients'], tf.float64), 1.0)
    measurements = collections.OrderedDict(
        round_num=state['round_num'],
        readjusted=active,
        readjustment_fraction=tf.where(active, rate, 0.0),
        clients=stats['clients'],
        examples=stats['examples'],
        uplink_bytes=stats['uplink_bytes'],
        downlink_bytes=stats['downlink_bytes'],
        uplink_bytes_per_client=tf.cast(stats['uplink_bytes'], tf.float64) /
        clients,
        cumulative_uplink_bytes=new_state['cumulative_uplink_bytes'],
        cumulative_downlink_bytes=new_state['cumulative_downlink_bytes'],
        mask_hamming_mean=tf.cast(stats['mask_hamming'], tf.float64) / clients,
        client_density_mean=tf.cast(stats['live_weights'], tf.float64) / (
            clients * float(sum(layout.kernel_sizes))),
        client_flops=stats['client_flops'],
        client_dense_flops=stats['client_dense_flops'],
    )
    for hook in hooks:
      measurements.update(hook.round_measurements(stats, clients, layout))
    return new_state, measurements

  if metrics_aggregator is None:
    @tff.tensorflow.computation(state_type, (metrics_type, stats_type),
                                np.float32, np.bool_)
    def advance(state, sums, rate, active):
      """The summed metrics finalized (as `tff.learning.metrics.
      sum_then_finalize`) and the round's step: one server computation
      after one sum of both, for a lean round."""
      metric_sums, stats = sums
      train = collections.OrderedDict(
          (name, finalizer(metric_sums[name]))
          for name, finalizer in metric_finalizers.items())
      new_state, measurements = round_step(state, stats, rate, active)
      return new_state, collections.OrderedDict(train=train,
                                                round=measurements)

    def aggregate(state, model_outputs, stats, rate, active):
      return tff.federated_map(advance, (
          state, tff.federated_sum((model_outputs, stats)), rate, active))
  else:
    aggregate_metrics = metrics_aggregator(metric_finalizers, metrics_type)

    @tff.tensorflow.computation(state_type, stats_type, np.float32, np.bool_)
    def advance_round(state, stats, rate, active):
      return round_step(state, stats, rate, active)

    def aggregate(state, model_outputs, stats, rate, active):
      new_state, measurements = tff.federated_map(advance_round, (
          state, tff.federated_sum(stats), rate, active))
      return new_state, tff.federated_zip(collections.OrderedDict(
          train=aggregate_metrics(model_outputs), round=measurements))

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(payload_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, payload, data):
    rate, active = tff.federated_map(schedule, state)
    result, model_outputs, stats = tff.federated_map(
        client_update_comp,
        (payload, data, tff.federated_broadcast(rate),
         tff.federated_broadcast(active)))
    new_state, measurements = aggregate(state, model_outputs, stats, rate,
                                        active)
    return tff.templates.MeasuredProcessOutput(new_state, result, measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
