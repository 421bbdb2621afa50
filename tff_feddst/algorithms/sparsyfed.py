"""SparsyFed as a `tff.learning.templates.LearningProcess`.

Guastella, Sani, Gusmeroli, Lane et al. "SparsyFed: Sparse Adaptive Federated
Training." ICLR 2025, arXiv 2504.05153. Read from the paper's abstract and
the first author's public code (AGuastella/fl_powerpropagation); the memo is
docs/notes/field_methods.md §3. Our own implementation, on the FedDST
components (sparse distributor and wire format, masked client work, masked
sums aggregator, mask finalizer) with options, not a parallel pipeline.

SparsyFed's (as the authors' code does it):
* Powerpropagation: every Dense/Conv2D kernel holds v and the layer computes
  with w = sign(v)|v|^β (`models.powerprop`); β (`sparsyfed_beta`, 1.25 in the
  authors' command) is the one hyperparameter. For β > 1 a weight that is 0
  stays 0 during local training.
* Activation pruning: while training, each layer's weight gradient uses its
  input with all but the top ⌈(1−s_l)·numel⌉ |x| zeroed, s_l the layer's
  weight sparsity; forward and input gradient exact; off at evaluation.
* Client: E epochs from the received sparse model, then one *global*
  magnitude prune over all kernels keeping exactly N − round(S·N) weights
  (torch's `global_unstructured`), and the upload of that sparse model.
* Server: plain FedAvg of the client models, x = Σ n_k x_k / Σ n_k with a
  client's zeros counted; no server pruning, so the next global mask is the
  union of the client masks (downlink density ≥ 1 − S, and for β > 1 the
  union can only shrink after round 1).
* Round 1 starts from the dense init.

What we chose:
* The received mask is re-applied after every step (our masked client work).
  For β > 1 that is a no-op (tests/algorithms/test_sparsyfed.py checks it
  against unmasked training); for β = 1 (the Top-K baseline) it keeps the
  client inside the received support, where the authors' dense client could
  regrow.
* The initial global model is dense, as the authors'. With β > 1 the first
  global mask bounds every later one (zeros never regrow, and the server only
  takes unions), so an initial magnitude prune to S would fix SparsyFed's
  support to the random init's largest weights and take away its learned
  mask. The uplink is the same either way (round 1 uploads are pruned to
  1 − S); the first downlink is dense and round 1's training FLOPs are
  dense, and both are counted (`downlink_bytes`, `client_flops`).
* The activation threshold is recomputed on every batch for every layer (the
  authors' conv layers keep the first batch's threshold).
* Ties in the global prune keep the lower position (layer order, then
  row-major); in the activation top-k every entry tied with the k-th is kept.
* The process state holds v (so checkpoints resume exactly);
  `get_model_weights` returns the effective weights w in the plain model's
  structure and `set_model_weights` takes such weights (v = sign(w)|w|^(1/β)),
  so evaluation, `keras_model_from_weights` and export see an ordinary Keras
  model.
* Measurements: the client density is 1 − S by construction
  (`client_work/round/client_density_mean`); the global (downlink) density
  is not: `client_work/round/downlink_density` (what the clients received)
  and `finalizer/density` (the new union).
* Not supported: per-client density budgets and differential privacy (the
  registry refuses both for `--algorithm=sparsyfed`); models with prunable
  layers other than Dense and Conv2D (refused by name).
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.aggregators import masked_mean
from tff_feddst.algorithms import registry
from tff_feddst.algorithms import skeleton
from tff_feddst.models import powerprop
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.sparsity import global_magnitude
from tff_feddst.templates import finalizer as finalizer_lib
from tff_feddst.templates import hooks
from tff_feddst.templates import packed_state

DEFAULT_BETA = registry.OPTIONS['sparsyfed_beta'].default


def build_weighted_sparsyfed(
    model_fn: Callable[[], tf.keras.Model],
    *,
    loss_fn: Any,
    input_spec: Any,
    metrics_fn: Callable[[], list[tf.keras.metrics.Metric]] | None = None,
    client_optimizer_fn: skeleton.OptimizerArg,
    server_optimizer_fn: skeleton.OptimizerArg | None = None,
    sparsity: float,
    sparsyfed_beta: float = DEFAULT_BETA,
    activation_pruning: bool = True,
    seed: int | None = None,
    client_epochs: int = 1,
    client_weight_decay: float = 0.0,
    client_norm_bound: float = 1e6,
    upload_dtype: str = 'float32',
    client_jit_compile: bool = False,
    initial_weights: Any = None,
    loop_implementation: tff.learning.LoopImplementation = (
        tff.learning.LoopImplementation.DATASET_ITERATOR),
    model_distributor: tff.learning.templates.DistributionProcess | None = None,
    model_aggregator: tff.aggregators.WeightedAggregationFactory | None = None,
    metrics_aggregator: Callable | None = None,
) -> tff.learning.templates.LearningProcess:
  """Builds SparsyFed (see the module docstring).

  Args:
    model_fn: no-arg callable returning a new, plain Sequential or functional
      Keras model; its Dense and Conv2D layers are re-parameterised
      (`models.powerprop`) and wrapped with TF-MOT.
    loss_fn: a `tf.keras.losses.Loss` or a no-arg callable returning one.
    input_spec: the batch spec, as in `tff.learning.models.from_keras_model`.
    metrics_fn: no-arg callable returning a list of Keras metrics.
    client_optimizer_fn: a `tff.learning.optimizers.Optimizer` (or no-arg
      callable returning one); it steps on v.
    server_optimizer_fn: optional server optimizer on the pseudo-gradient
      W − mean (of v), re-masked to the union. None: W := mean (FedAvg, the
      authors' default).
    sparsity: S in [0, 1): each client uploads N − round(S·N) weights.
    sparsyfed_beta: β >= 1 of w = sign(v)|v|^β (1: no re-parameterisation,
      the authors' Top-K baseline).
    activation_pruning: SparsyFed's pruned weight-gradient inputs (False:
      the authors' "no activation pruning" ablation).
    seed: seeds the random init (`tf.keras.utils.set_random_seed`).
    client_epochs: E, local epochs.
    client_weight_decay: coupled L2 λ on v (g + λ v), as torch's SGD.
    client_norm_bound: a client whose upload has an L2 norm above this (or a
      NaN/Inf) is left out of the round.
    upload_dtype: 'float32', 'bfloat16' or 'float16' for the uploaded values.
    client_jit_compile: XLA-compile each client training step.
    initial_weights: start from these effective weights (a Keras model with
      `model_fn`'s architecture or its weight arrays); v = sign(w)|w|^(1/β).
    loop_implementation: the local training loop (`tff.learning`).
    model_distributor: replaces the sparse distributor; it must send the
      same sparse payload.
    model_aggregator: replaces the masked sums; it must produce the masked
      sums the finalizer reads.
    metrics_aggregator: aggregates the clients' training metrics, as in
      tff.learning (default: summed, then finalized).

  Returns:
    A `tff.learning.templates.LearningProcess` whose state holds v and whose
    `get_model_weights`/`set_model_weights` speak the effective weights.
  """
  parts = build_sparsyfed_components(**dict(locals()))
  return compose_sparsyfed(parts, sparsyfed_beta)


def compose_sparsyfed(parts: skeleton.Components, beta: float
                      ) -> tff.learning.templates.LearningProcess:
  """The LearningProcess of `build_sparsyfed_components(...)` built with β.

  Its state holds v; `get_model_weights` returns the effective weights
  w = sign(v)|v|^β and `set_model_weights` takes effective weights.
  """
  process = tff.learning.templates.compose_learning_process(
      parts.initial_model_weights_fn, parts.distributor, parts.client_work,
      parts.aggregator, parts.finalizer)
  return packed_state.with_packed_masks(
      _with_effective_weights(process, parts.layout,
                              powerprop.check_beta(beta)), parts.layout)


def build_sparsyfed_components(
    model_fn: Callable[[], tf.keras.Model], **kwargs) -> skeleton.Components:
  """The parts `build_weighted_sparsyfed` composes; its state holds v.

  Takes exactly the keyword arguments of `build_weighted_sparsyfed`.
  """
  a = skeleton.bind_arguments(build_weighted_sparsyfed,
                              'build_sparsyfed_components', model_fn, kwargs)
  registry.check_builder_args('sparsyfed', a)
  skeleton.check_norm_bound(a['client_norm_bound'])
  beta = powerprop.check_beta(a['sparsyfed_beta'])
  client_optimizer, server_optimizer = skeleton.checked_optimizers(
      client_optimizer_fn=a['client_optimizer_fn'],
      server_optimizer_fn=a['server_optimizer_fn'], loss_fn=a['loss_fn'])

  def reparameterised(plain):
    return powerprop.powerprop_model(
        plain, beta, activation_pruning=a['activation_pruning'])

  # The dense initial model: v = sign(u)|u|^(1/β) of the plain model's own
  # (seeded) init u, or of `initial_weights`. Every mask is all ones, and
  # the layout's live counts are the kernel sizes (a global mask may be
  # dense).
  _, model = skeleton.prunable_model(
      model_fn, a['input_spec'], seed=a['seed'],
      initial_weights=a['initial_weights'], transform=reparameterised)
  layout = layout_lib.build_layout(model, 0.0, 'uniform')
  trainable, non_trainable = skeleton.weight_arrays(model)
  return skeleton.build_components(
      layout, trainable, non_trainable, client_optimizer=client_optimizer,
      hooks=(hooks.SparsyFedGlobalPrune(global_magnitude.num_keep(
          sum(layout.kernel_sizes), a['sparsity'])),),
      aggregator_factory=masked_mean.MaskedSumFactory(
          layout, norm_bound=a['client_norm_bound']),
      build_finalizer=functools.partial(
          finalizer_lib.build_mask_finalizer, layout,
          server_optimizer=server_optimizer,
          rule=finalizer_lib.MaskRule(mean_over='all', union_only=True)),
      **skeleton.builder_parts(a, models_fn=skeleton.training_models_fn(
          lambda: powerprop.powerprop_model(
              model_fn(), beta, activation_pruning=a['activation_pruning'],
              copy_weights=False),
          loss_fn=a['loss_fn'], input_spec=a['input_spec'],
          metrics_fn=a['metrics_fn'])))


def effective_weights(layout: layout_lib.ModelLayout, weights, beta: float
                      ) -> tff.learning.models.ModelWeights:
  """ModelWeights with each kernel's v replaced by w = sign(v)|v|^β."""
  trainable = list(weights.trainable)
  for i in layout.kernel_index:
    trainable[i] = powerprop.effective_kernel(trainable[i], beta)
  return tff.learning.models.ModelWeights(trainable,
                                          list(weights.non_trainable))


def _with_effective_weights(process, layout: layout_lib.ModelLayout,
                            beta: float
                            ) -> tff.learning.templates.LearningProcess:
  """`process` whose get/set_model_weights convert between v and w."""
  state_type = process.next.type_signature.parameter[0].member
  weights_type = state_type.global_model_weights

  @tff.tensorflow.computation(state_type)
  def get_model_weights(state):
    return effective_weights(layout, state.global_model_weights, beta)

  @tff.tensorflow.computation(state_type, weights_type)
  def set_model_weights(state, weights):
    trainable = list(weights.trainable)
    for i in layout.kernel_index:
      trainable[i] = powerprop.inverse_kernel(trainable[i], beta)
    return tff.learning.templates.LearningAlgorithmState(
        global_model_weights=tff.learning.models.ModelWeights(
            trainable, list(weights.non_trainable)),
        distributor=state.distributor, client_work=state.client_work,
        aggregator=state.aggregator, finalizer=state.finalizer)

  return tff.learning.templates.LearningProcess(
      process.initialize, process.next, get_model_weights, set_model_weights,
      get_hparams_fn=process.get_hparams, set_hparams_fn=process.set_hparams)

