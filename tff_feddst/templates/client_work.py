"""Masked local training with FedDST's readjustment, as a `ClientWorkProcess`.

`(<S@SERVER, P@CLIENTS, {B*}@CLIENTS> -> <S@SERVER, ClientResult@CLIENTS, M@SERVER>)`

Each client decodes the sparse payload P (weights + mask), trains E epochs of
SGD with the mask re-applied after every optimizer step (so masked weights
stay exactly 0), optionally with weight decay and the FedProx term. On
readjustment rounds, after local epoch k (default E), it prunes α_r of its
live weights by |w| and regrows as many by |dense gradient| of its last
mini-batch(es) (Bibikar et al., "Federated Dynamic Sparse Training", AAAI
2022, Alg. 1), then trains the remaining E - k epochs on the new mask. The
client optimizer's state lives for one round (it carries over the
readjustment). It uploads the sparse payload (`sparse.SparsePayload`): live
values (float32 or 16-bit), its mask packed to bits only if it changed, and
the dense params.

With per-client density budgets (`budgets`, `sparsity.budgets`) the client
data is `<data=B*, budget=float32*>`: right after decoding, a client keeps
per layer only the largest |w| of the received mask within its budget, and
trains, readjusts (prune and regrow keep its counts) and uploads that
sub-mask (its mask bits then travel and are counted).

With `LocalTrainingConfig.global_prune_keep` (SparsyFed) a client, after
its local epochs, keeps only that many largest |w| over all masked kernels
together and uploads that mask; the measurements then add
`downlink_density`, the density of the model the clients received.

With `ReadjustmentConfig.flash` (FLASH, `algorithms.flash`) the readjustment
is FLASH's client DST instead (`sparsity.flash.client_readjust`): after each
local epoch but the last (E = 1: after the epoch) prune ⌈p·nnz_l⌉ smallest
|w| per layer, regrow as many at random, spread over layers by mean |w|,
with p the round's rate decayed linearly over the epochs; a budgeted client
keeps its per-layer counts. The round's rate and whether clients run it come
from `sparsity.flash.client_schedule`.

With `ReadjustmentConfig.prunefl_interval` (PruneFL, `algorithms.prunefl`)
clients never change their mask; they sum the dense loss gradient of every
trainable param over their local steps, and upload its square every round
besides the sparse payload (`ImportanceUpload`): per kernel weight, live or
not, densely; for the dense params only the sum (PruneFL's S0). The server
adds them up until its next reconfiguration (`templates.prunefl_finalizer`):
the authors' clients keep that sum themselves, ours are sampled and keep
nothing, so the uplink counts the importance every round.

The server-side state counts rounds (which drive α_r) and the cumulative bytes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.learning import loop_builder

from tff_feddst import sparsity as sparsity_lib
from tff_feddst.sparsity import budgets as budgets_lib
from tff_feddst.sparsity import budgets_tf
from tff_feddst.sparsity import flash as flash_lib
from tff_feddst.sparsity import global_magnitude
from tff_feddst.sparsity import prunefl_tf
from tff_feddst.sparse import codec
from tff_feddst.sparse.layout import ModelLayout


@dataclasses.dataclass(frozen=True)
class ReadjustmentConfig:
  """When and how much clients readjust their masks (see `sparsity.schedules`).

  `after_epoch` k (1 <= k <= E, None = E) is the local epoch after which a
  client readjusts (the reference's `--pruning-begin` + 1): with k < E it
  trains the remaining E - k epochs on its new mask, so regrown weights reach
  the server trained instead of at exactly 0, and can compete there.
  """
  fraction: float = 0.0               # α
  rounds_between: int = 10            # R_adj
  end_round: int = 0                  # R_end
  schedule: str = 'cosine'
  gradient_batches: int = 1           # last batches summed for regrowth
  after_epoch: int | None = None      # k; None: after the last epoch
  # FLASH's client DST instead (`sparsity.flash`): prune by |w|, regrow at
  # random, after every local epoch but the last; the fields above unused.
  flash: flash_lib.ClientDST | None = None
  # PruneFL's reconfiguration interval R_adj: clients keep their mask and
  # upload squared summed gradients (module doc); the fields above unused.
  prunefl_interval: int | None = None


class ImportanceUpload(NamedTuple):
  """A PruneFL client's upload: the sparse payload, (Σ_steps g)² per kernel
  weight (flat, float32) and its sum over the dense params (shape [1])."""
  payload: codec.SparsePayload
  importance: list[Any]
  base_importance: Any


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
  # SparsyFed: after local training keep this many largest |w| across all
  # masked kernels together (`sparsity.global_magnitude`) and upload that
  # mask; None: no end-of-round prune.
  global_prune_keep: int | None = None


def _batch_xy(batch):
  if isinstance(batch, Mapping):
    return batch['x'], batch['y']
  return batch[0], batch[1]


class RegrowthMemory:
  """The dense kernel gradients of the last `n` training batches, in the loop.

  Regrowth ranks dead weights by the summed dense loss gradient of the last
  `n` batches (before their step; FedDST/RigL's criterion). Carried in the
  training loop's state: nothing when clients never readjust (n = 0), the
  last gradient itself for n = 1, a ring buffer for more.
  """

  def __init__(self, kernel_vars, n: int, indices=()):
    self._kernels = kernel_vars
    self.n = n
    self.indices = tuple(indices)  # Of the kernels among the trainables.

  def initial(self):
    shape = [self.n] if self.n > 1 else []
    return (tf.constant(0, tf.int64),
            tuple(tf.zeros(shape + k.shape.as_list(), k.dtype)
                  for k in self._kernels) if self.n else ())

  def remember(self, recent, kernel_grads):
    if self.n <= 1:
      return (recent[0], tuple(kernel_grads)) if self.n else recent
    step, buffers = recent
    slot = tf.math.floormod(step, self.n)
    buffers = tuple(tf.tensor_scatter_nd_update(b, [[slot]], g[None])
                    for b, g in zip(buffers, kernel_grads))
    return step + 1, buffers

  def summed(self, recent):
    return [tf.reduce_sum(r, axis=0) if self.n > 1 else r for r in recent[1]]


class GradientSum:
  """Σ over the local steps of the dense loss gradient of every trainable
  variable (PruneFL's importance, before squaring), in the loop's state.
  Same interface as `RegrowthMemory`."""

  n = 1

  def __init__(self, trainable_vars):
    self._vars = trainable_vars
    self.indices = tuple(range(len(trainable_vars)))

  def initial(self):
    return (tf.constant(0, tf.int64),
            tuple(tf.zeros(v.shape, v.dtype) for v in self._vars))

  def remember(self, recent, grads):
    step, sums = recent
    return step + 1, tuple(s + g for s, g in zip(sums, grads))

  def summed(self, recent):
    return list(recent[1])


def _dense(g, v):
  if isinstance(g, tf.IndexedSlices):  # Embeddings.
    g = tf.ensure_shape(tf.convert_to_tensor(g), v.shape)
  return g


class _ClientTrainer:
  """One client's round, in named steps: decode → masked local training (with
  the readjustment) → encode → statistics. Built inside the client
  computation; `client_update` is its tf.function.

  `models_fn` returns (the TF-MOT-wrapped Keras model, a tff.learning model
  whose forward pass runs on the same trainable variables). `always_dense`
  lists, per kernel, whether its mask keeps every weight in every round
  (default: from `layout.live_counts`).
  """

  def __init__(self, models_fn: Callable, layout: ModelLayout,
               optimizer: tff.learning.optimizers.Optimizer,
               training: LocalTrainingConfig,
               readjustment: ReadjustmentConfig, loop: Callable,
               always_dense=None, budgets: tuple[float, ...] | None = None):
    keras_model, self.model = models_fn()
    self.layout = layout
    self.budgets = budgets
    if budgets:  # Every kernel gets a client sub-mask: none stays dense.
      always_dense = [False] * layout.num_kernels
    self.optimizer = optimizer
    self.training = training
    self.loop = loop
    self.trainable = list(keras_model.trainable_weights)
    self.non_trainable = list(keras_model.non_trainable_weights)
    self.kernel_vars = [self.trainable[i] for i in layout.kernel_index]
    self.mask_vars = [self.non_trainable[i] for i in layout.mask_index]
    if always_dense is None:
      always_dense = [live == size for live, size in
                      zip(layout.live_counts, layout.kernel_sizes)]
    # Kernels whose mask has every weight live (a layer ERK keeps dense, or
    # S=0) need no re-masking: readjustment never changes them (it regrows
    # only among dead weights), so they skip the per-step multiply.
    self.remasked = {i: m for i, m, dense in zip(
        layout.kernel_index, self.mask_vars, always_dense) if not dense}
    self.prunefl = readjustment.prunefl_interval is not None
    if self.prunefl:
      self.memory = GradientSum(self.trainable)
    else:
      self.memory = RegrowthMemory(
          self.kernel_vars,
          readjustment.gradient_batches if readjustment.fraction > 0 else 0,
          indices=layout.kernel_index)
    self.epochs = training.epochs
    self.after_epoch = readjustment.after_epoch or training.epochs
    self.flash = readjustment.flash
    self.client_update = tf.function(self._client_update)

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

  def _apply_budget(self, received_masks, budget):
    """Keeps, per layer, the largest |w| of the received mask within the
    budget (`sparsity.budgets_tf`); returns the sub-masks and the counts."""
    masks, counts = budgets_tf.budget_masks(self.kernel_vars, received_masks,
                                            budget)
    for kernel, mask_var, sub in zip(self.kernel_vars, self.mask_vars, masks):
      mask_var.assign(sub)
      kernel.assign(kernel * sub)
    return masks, counts

  # Masked local training.
  def _regularized(self, g, w, w0):
    # One fused expression per tensor: coupled L2 (λ w) + FedProx μ (w - w0).
    if self.training.weight_decay:
      g = g + self.training.weight_decay * w
    if self.training.prox_mu:
      g = g + self.training.prox_mu * (w - w0)
    return g

  def _step_fn(self, global_trainable, step_masks, remember: bool):
    """One SGD step on a batch, re-masked; optionally remembers gradients."""
    trainable, memory = self.trainable, self.memory

    def step(batch, opt_state, recent):
      with tf.GradientTape() as tape:
        output = self.model.forward_pass(batch, training=True)
      grads = tape.gradient(output.loss, trainable)
      if remember:
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
    # The masks are fixed between readjustments: read them once, not per step.
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

  def _readjust_within_fn(self, global_trainable, readjust, fraction):
    """Epochs 1..k, the readjustment, then epochs k+1..E on the new mask.

    The optimizer state carries over, as in the reference's client. The
    masks are read every step, as they change within the loop.
    """
    memory = self.memory

    def reduce_fn(state, element):
      epoch, batch = element
      *train_state, done = state
      if memory.n:
        def readjust_now():
          self._readjust_masks(train_state[2], fraction)
          return tf.constant(True)
        now = tf.logical_and(tf.logical_and(readjust, tf.logical_not(done)),
                             epoch >= self.after_epoch)
        done = tf.cond(now, readjust_now, lambda: done)
      step = self._step_fn(global_trainable, self._step_masks(),
                           remember=memory.n > 0)
      return tuple(step(tuple(train_state), batch)) + (done,)

    return reduce_fn

  def _readjust_masks(self, recent, fraction):
    for k, m, g in zip(self.kernel_vars, self.mask_vars,
                       self.memory.summed(recent)):
      result = sparsity_lib.readjust(k, g, m, fraction)
      m.assign(result.mask)
      k.assign(result.weights)

  def _train(self, data, fraction, readjust, limits=None):
    """E local epochs with the readjustment after epoch k; (examples seen,
    the gradient memory's final state)."""
    if self.flash is not None:
      return self._train_flash(data, fraction, readjust, limits), ()
    global_trainable = [tf.identity(v) for v in self.trainable]
    memory = self.memory

    def initial_state():
      specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in self.trainable)
      return (tf.constant(0, tf.int64), self.optimizer.initialize(specs),
              memory.initial())

    if self.after_epoch == self.epochs:
      state = self.loop(self._step_fn(global_trainable, self._step_masks(),
                                      remember=memory.n > 0),
                        data.repeat(self.epochs), initial_state)
      if not self.prunefl and memory.n and readjust:
        self._readjust_masks(state[2], fraction)
    else:
      state = self.loop(
          self._readjust_within_fn(global_trainable, readjust, fraction),
          self._tagged_epochs(data),
          lambda: initial_state() + (tf.constant(False),))
    return state[0], state[2]

  def _flash_event(self, event, rate, limits):
    """FLASH's DST event number `event` (`sparsity.flash.client_readjust`)."""
    seed = flash_lib.event_seed(self.flash.seed, self.kernel_vars, event)
    result = flash_lib.client_readjust(
        [tf.convert_to_tensor(k) for k in self.kernel_vars],
        [tf.convert_to_tensor(m) for m in self.mask_vars],
        flash_lib.event_rate(rate, event, self.epochs), seed, limits=limits)
    for kernel, mask_var, k, m in zip(self.kernel_vars, self.mask_vars,
                                      result.kernels, result.masks):
      mask_var.assign(m)
      kernel.assign(k)
    return tf.constant(True)

  def _train_flash(self, data, rate, readjust, limits):
    """E epochs with FLASH's DST event after each epoch but the last (E = 1:
    one after the epoch); `limits`: a budgeted client's per-layer counts."""
    global_trainable = [tf.identity(v) for v in self.trainable]

    def initial_state():
      specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in self.trainable)
      return (tf.constant(0, tf.int64), self.optimizer.initialize(specs),
              self.memory.initial(), tf.constant(0, tf.int64))

    def reduce_fn(state, element):
      epoch, batch = element  # 0-based: the first batch of epoch e follows
      *train_state, last_event = state  # the end of (1-based) epoch e.
      now = tf.logical_and(readjust, epoch > last_event)
      last_event = tf.cond(
          now, lambda: (self._flash_event(epoch, rate, limits), epoch)[1],
          lambda: last_event)
      step = self._step_fn(global_trainable, self._step_masks(),
                           remember=False)
      return tuple(step(tuple(train_state), batch)) + (last_event,)

    state = self.loop(reduce_fn, self._tagged_epochs(data), initial_state)
    if self.epochs == 1:
      tf.cond(readjust, lambda: self._flash_event(1, rate, limits),
              lambda: tf.constant(False))
    return state[0]

  def _prune_globally(self, keep: int):
    """Keeps the `keep` largest |w| over all masked kernels (SparsyFed)."""
    masks = global_magnitude.global_magnitude_masks(
        [tf.convert_to_tensor(k) for k in self.kernel_vars],
        [tf.convert_to_tensor(m) for m in self.mask_vars], keep)
    for kernel, mask_var, mask in zip(self.kernel_vars, self.mask_vars, masks):
      mask_var.assign(mask)
      kernel.assign(kernel * mask)

  def _with_importance(self, payload, memory_state):
    """The payload plus PruneFL's importance (`ImportanceUpload`):
    (Σ_steps g)², unweighted (the aggregator weights by the examples
    processed)."""
    squares = [tf.square(g) for g in self.memory.summed(memory_state)]
    kernel_index = set(self.layout.kernel_index)
    importance = [tf.reshape(squares[i], [-1])
                  for i in self.layout.kernel_index]
    dense = [tf.reduce_sum(s) for i, s in enumerate(squares)
             if i not in kernel_index]
    base = tf.add_n(dense) if dense else tf.constant(0.0)
    return ImportanceUpload(payload, importance, tf.reshape(base, [1]))

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

  def _budget_stats(self, budget, counts, upload_bytes):
    """Per budget group (one-hot over `budgets`): clients, uplink bytes,
    live weights uploaded, and clients above their budget in some layer."""
    densities = tf.constant(self.budgets, tf.float32)
    group = tf.argmin(tf.abs(densities - tf.cast(budget, tf.float32)))
    one_hot = tf.one_hot(group, len(self.budgets), dtype=tf.int64)
    live = [tf.cast(tf.reduce_sum(m), tf.int32) for m in self.mask_vars]
    over = tf.reduce_any(tf.stack([l > k for l, k in zip(live, counts)]))
    return collections.OrderedDict(
        clients=one_hot,
        uplink_bytes=one_hot * upload_bytes,
        live_weights=one_hot * tf.cast(tf.add_n(live), tf.int64),
        over_budget_clients=one_hot * tf.cast(over, tf.int64))

  def _client_update(self, payload, data, fraction, readjust, budget=None):
    received_masks = self._load_payload(payload)
    start_masks = received_masks
    if budget is not None:
      start_masks, counts = self._apply_budget(received_masks, budget)
    num_examples, memory_state = self._train(
        data, fraction, readjust, counts if budget is not None else None)
    if self.training.global_prune_keep is not None:
      self._prune_globally(self.training.global_prune_keep)
    hamming = tf.add_n([sparsity_lib.hamming_distance(m, r) for m, r in
                        zip(self.mask_vars, received_masks)])
    kernels, masks, dense = self.layout.split(self.trainable,
                                              self.non_trainable)
    upload = codec.encode(kernels, masks, dense, send_masks=hamming > 0,
                          dtype=self.training.upload_dtype)
    if self.prunefl:
      upload = self._with_importance(upload, memory_state)
    stats = self._stats(payload, upload, start_masks, hamming, num_examples)
    if budget is not None:
      stats['budget'] = self._budget_stats(budget, counts,
                                           stats['uplink_bytes'])
    if self.training.global_prune_keep is not None:
      stats['received_live_weights'] = tf.add_n(
          [tf.cast(tf.reduce_sum(m), tf.int64) for m in received_masks])
    result = tff.learning.templates.ClientResult(
        update=upload, update_weight=tf.cast(num_examples, tf.float32))
    return result, self.model.report_local_unfinalized_metrics(), stats


def _build_client_update(models_fn, layout: ModelLayout,
                         optimizer: tff.learning.optimizers.Optimizer,
                         training: LocalTrainingConfig,
                         readjustment: ReadjustmentConfig,
                         loop: Callable, always_dense=None, budgets=None):
  """(The client's tf.function, its tff.learning model); see `_ClientTrainer`."""
  trainer = _ClientTrainer(models_fn, layout, optimizer, training,
                           readjustment, loop, always_dense, budgets)
  return trainer.client_update, trainer.model


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


def _budget_measurements(budgets, sums) -> collections.OrderedDict:
  """Per group label: clients, per-client means (NaN if none), over budget."""
  out = collections.OrderedDict()
  for i, density in enumerate(budgets):
    clients = sums['clients'][i]
    n = tf.cast(clients, tf.float64)

    def mean(total, n=n):
      return tf.where(n > 0, tf.cast(total, tf.float64) / tf.maximum(n, 1.0),
                      tf.constant(np.nan, tf.float64))

    out[budgets_lib.label(density)] = collections.OrderedDict(
        clients=clients,
        uplink_bytes_per_client=mean(sums['uplink_bytes'][i]),
        live_weights_per_client=mean(sums['live_weights'][i]),
        over_budget_clients=sums['over_budget_clients'][i])
  return out


def build_masked_client_work(
    models_fn: Callable, layout: ModelLayout, payload_type, data_type, *,
    optimizer: tff.learning.optimizers.Optimizer,
    training: LocalTrainingConfig,
    readjustment: ReadjustmentConfig,
    loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
    always_dense=None,
    budgets: tuple[float, ...] | None = None,
    initial_bytes: tuple[int, int] = (0, 0),
) -> tff.learning.templates.ClientWorkProcess:
  """The FedDST client work; `models_fn` builds the models anew (see above).

  `initial_bytes` (uplink, downlink) start the cumulative counts: traffic
  before round 1 (PruneFL's initial pruning on one client).

  With `budgets` (the densities of the budget groups, `sparsity.budgets`)
  each client's data is `<data=B*, budget=float32*>` (`budget_data_type`):
  the client trains and uploads the sub-mask of its budget, and the
  measurements get, per group, `budget/<density>/...` (clients, mean uplink
  bytes and live weights per client, clients above their budget).
  """
  loop = loop_builder.build_training_loop(loop_implementation)

  with tf.Graph().as_default():
    _, model = models_fn()
    metric_finalizers = model.metric_finalizers()

  @tff.tensorflow.computation(payload_type, data_type, np.float32, np.bool_)
  def client_update_comp(payload, data, fraction, readjust):
    client_update, _ = _build_client_update(models_fn, layout, optimizer,
                                            training, readjustment, loop,
                                            always_dense, budgets)
    if budgets:
      budget = data['budget'].reduce(tf.constant(0.0), lambda a, b: a + b)
      return client_update(payload, data['data'], fraction, readjust, budget)
    return client_update(payload, data, fraction, readjust)

  state_spec = collections.OrderedDict(
      round_num=np.int64, cumulative_uplink_bytes=np.int64,
      cumulative_downlink_bytes=np.int64)

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
    r = state['round_num']
    if readjustment.flash is not None:  # p_0 of the round, DST or not.
      return flash_lib.client_schedule(r, readjustment.flash)
    if readjustment.prunefl_interval is not None:
      return tf.constant(0.0), prunefl_tf.is_reconfiguration_round(
          r, readjustment.prunefl_interval)
    fraction = sparsity_lib.readjustment_fraction(
        r, readjustment.fraction, readjustment.end_round, readjustment.schedule)
    readjust = sparsity_lib.is_readjustment_round(
        r, readjustment.fraction, readjustment.end_round,
        readjustment.rounds_between, readjustment.schedule)
    return tf.cast(fraction, tf.float32), readjust

  metrics_type = client_update_comp.type_signature.result[1]
  stats_type = client_update_comp.type_signature.result[2]

  @tff.tensorflow.computation(state_type, (metrics_type, stats_type),
                              np.float32, np.bool_)
  def advance(state, sums, fraction, readjust):
    """The next state and the round's measurements: the summed metrics
    finalized (as `tff.learning.metrics.sum_then_finalize`) and the summed
    statistics. One server computation after one sum of both, for a lean
    round."""
    metric_sums, stats = sums
    train = collections.OrderedDict(
        (name, finalizer(metric_sums[name]))
        for name, finalizer in metric_finalizers.items())
    new_state = collections.OrderedDict(
        round_num=state['round_num'] + 1,
        cumulative_uplink_bytes=state['cumulative_uplink_bytes'] +
        stats['uplink_bytes'],
        cumulative_downlink_bytes=state['cumulative_downlink_bytes'] +
        stats['downlink_bytes'])
    clients = tf.maximum(tf.cast(stats['clients'], tf.float64), 1.0)
    measurements = collections.OrderedDict(
        round_num=state['round_num'],
        readjusted=readjust,
        readjustment_fraction=tf.where(readjust, fraction, 0.0),
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
    if budgets:
      measurements['budget'] = _budget_measurements(budgets, stats['budget'])
    if training.global_prune_keep is not None:
      # The density of the global model the clients received (SparsyFed's
      # union mask); their uploads keep `global_prune_keep` weights each.
      measurements['downlink_density'] = tf.cast(
          stats['received_live_weights'], tf.float64) / (
              clients * float(sum(layout.kernel_sizes)))
    return new_state, collections.OrderedDict(train=train, round=measurements)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(payload_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, payload, data):
    fraction, readjust = tff.federated_map(schedule, state)
    result, model_outputs, stats = tff.federated_map(
        client_update_comp,
        (payload, data, tff.federated_broadcast(fraction),
         tff.federated_broadcast(readjust)))
    new_state, measurements = tff.federated_map(
        advance, (state, tff.federated_sum((model_outputs, stats)), fraction,
                  readjust))
    return tff.templates.MeasuredProcessOutput(new_state, result, measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
