"""Federated Dynamic Sparse Training as a `tff.learning.templates.LearningProcess`.

Bibikar, Vikalo, Wang, Chen. "Federated Dynamic Sparse Training: Computing
Less, Communicating Less, Yet Learning Better." AAAI 2022.

One builder composes a sparse distributor, the masked client work, the masked
sum aggregator and the mask finalizer with `compose_learning_process`; the
state keeps the masks bit-packed (`templates.packed_state`).
FedAvg (S=0), FedAvgM (S=0 + server momentum), FedProx (μ>0), RandomMask
(S>0, α=0) and FedDST+FedProx are the same builder with other arguments.

With `dp_noise_multiplier` set, the same builder gives DP-FedAvg (McMahan et
al., ICLR 2018) on the sparse model (`tff_feddst.privacy`): clients upload
their delta over the live weights and dense params, TFF's
`DifferentiallyPrivateFactory` clips and noises it, and the global mask is
*fixed*: a client's readjusted mask, and the server's vote counts over those
masks, would reveal which weights each client keeps (a function of its data)
outside the noised sum. So DP runs take no readjustment (α = 0: dense FedAvg
at S=0, RandomMask at S>0); FedDST with readjustment is refused.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import models as models_lib
from tff_feddst.aggregators import masked_mean
from tff_feddst.algorithms import registry
from tff_feddst.algorithms import skeleton
from tff_feddst.privacy import aggregator as dp_aggregator_lib
from tff_feddst.privacy import delta_client_work
from tff_feddst.privacy import finalizer as dp_finalizer_lib
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.templates import finalizer as finalizer_lib
from tff_feddst.templates import hooks
from tff_feddst.templates import packed_state

OptimizerArg = skeleton.OptimizerArg
FedDSTComponents = skeleton.Components  # The name of the parts before FLASH.


def _dp_config(noise_multiplier, clip_norm, adaptive_quantile,
               clients_per_round) -> dp_aggregator_lib.DPConfig | None:
  """The DP setting (None: off). The registry checks the DP options
  (`registry.check_builder_args`); the clients per round are the builder's."""
  if noise_multiplier is None:
    if clients_per_round is not None:
      raise ValueError(f'dp_clients_per_round={clients_per_round!r} needs '
                       'dp_noise_multiplier (None: no differential privacy).')
    return None
  if clients_per_round is None:
    raise ValueError('dp_clients_per_round is required with differential '
                     'privacy: the clients sampled per round, the fixed '
                     'denominator of the mean.')
  return dp_aggregator_lib.DPConfig(
      noise_multiplier=noise_multiplier, clients_per_round=clients_per_round,
      clip_norm=clip_norm, adaptive_quantile=adaptive_quantile)


def build_weighted_feddst(
    model_fn: Callable[[], tf.keras.Model],
    *,
    loss_fn: Any,
    input_spec: Any,
    metrics_fn: Callable[[], list[tf.keras.metrics.Metric]] | None = None,
    client_optimizer_fn: OptimizerArg,
    server_optimizer_fn: OptimizerArg | None = None,
    sparsity: float,
    sparsity_distribution: str = 'feddst_erk',
    readjustment_ratio: float,
    rounds_between_readjustments: int = 10,
    readjustment_end_round: int = 0,
    readjustment_schedule: str = 'cosine',
    prox_mu: float = 0.0,
    min_votes: int = 0,
    seed: int | None = None,
    client_epochs: int = 1,
    client_weight_decay: float = 0.0,
    regrowth_gradient_batches: int = 1,
    client_norm_bound: float = 1e6,
    readjust_after_epoch: int | None = None,
    remember_old: bool = False,
    upload_dtype: str = 'float32',
    client_jit_compile: bool = False,
    final_sparsity: float | None = None,
    consensus_regrowth: bool = False,
    initial_weights: Any = None,
    client_density_budgets: Any = None,
    dp_noise_multiplier: float | None = None,
    dp_clip_norm: float | None = None,
    dp_adaptive_quantile: float | None = None,
    dp_clients_per_round: int | None = None,
    loop_implementation: tff.learning.LoopImplementation = (
        tff.learning.LoopImplementation.DATASET_ITERATOR),
    model_distributor: tff.learning.templates.DistributionProcess | None = None,
    model_aggregator: tff.aggregators.WeightedAggregationFactory | None = None,
    metrics_aggregator: Callable | None = None,
) -> tff.learning.templates.LearningProcess:
  """Builds FedDST (and, by its arguments, FedAvg/FedAvgM/FedProx/RandomMask).

  Returns the `tff.learning.templates.LearningProcess` (initialize / next /
  get_model_weights / set_model_weights) composed from the sparse
  distributor, masked client work, masked-sum aggregator and mask finalizer
  (`build_feddst_components` returns those parts).

  Args:
    model_fn: no-arg callable returning a new, plain (unwrapped) Sequential or
      functional Keras model; the library wraps it with TF-MOT.
    loss_fn: a `tf.keras.losses.Loss` or a no-arg callable returning one.
    input_spec: the batch spec, as in `tff.learning.models.from_keras_model`.
    metrics_fn: no-arg callable returning a list of Keras metrics.
    client_optimizer_fn: a `tff.learning.optimizers.Optimizer` (or no-arg
      callable returning one); the paper uses SGD lr 0.01, momentum 0.9.
    server_optimizer_fn: optional server optimizer applied to the
      pseudo-gradient W - mean (FedAvgM: SGD with momentum). None: W := mean.
    sparsity: global sparsity S of the prunable kernels, in [0, 1).
    sparsity_distribution: 'feddst_erk' (reference), 'erk', 'er', 'uniform'.
    readjustment_ratio: α, the fraction of live weights readjusted.
    rounds_between_readjustments: R_adj.
    readjustment_end_round: R_end; no readjustment from this round on.
    readjustment_schedule: 'cosine' (α_r decays to 0 at R_end) or 'constant'.
    prox_mu: FedProx μ; adds μ (w - w_global) to every client gradient.
    min_votes: a weight enters the union mask when at least this many clients
      (and at least one) keep it.
    seed: seeds the random init (via `tf.keras.utils.set_random_seed`).
    client_epochs: E, local epochs over each client's dataset.
    client_weight_decay: L2 strength λ added to the client gradient as λ w
      (coupled weight decay, as torch's SGD `weight_decay` in the reference);
      the paper uses 1e-3.
    regrowth_gradient_batches: the dense loss gradients of this many last
      training batches are summed to rank the weights to regrow (the
      reference uses the last mini-batch). They are kept during training, so
      regrowth costs no extra pass over the data.
    client_norm_bound: a client whose uploaded weights have an L2 norm above
      this (or any NaN/Inf) is dropped from the round and counted in the
      aggregator's `dropped_clients` measurement.
    readjust_after_epoch: k, readjust after local epoch k (1 <= k <= E) and
      train the remaining E - k epochs on the new mask (the reference's
      `--pruning-begin` k - 1); None: after the last epoch (k = E).
    remember_old: for the server's mask decision, a client that does not keep
      a weight of the previous global mask counts with the server's previous
      value (the reference's `--remember-old`; `sparsity.server_masks`).
    upload_dtype: 'float32', 'bfloat16' or 'float16': clients upload live
      values and dense params in this type (the reference's `--fp16` rounds
      through bfloat16); the server accumulates in float32.
    client_jit_compile: XLA-compile each client training step (forward,
      backward, L2/prox, optimizer update, re-mask); results equal the
      uncompiled step's within float tolerance. Off by default: slower for
      the paper CNN on a 2-core CPU (docs/performance.md).
    final_sparsity: the target sparsity moves linearly from `sparsity` (round
      0) to this (from round R_end on), with exact layer densities every
      round (the reference's `--final-sparsity`); None: constant. Must be
      >= `sparsity`.
    consensus_regrowth: this project's server rule: on readjusting rounds the
      server reserves floor(α_r · live) slots per layer for weights the
      clients regrew, ranked by their votes (`sparsity.server_masks`).
    initial_weights: start from a trained model: a Keras model with the
      architecture `model_fn` builds, or its `get_weights()` arrays. The
      initial masks are the magnitude pruning of these weights. None: the
      random init (seeded by `seed`).
    client_density_budgets: per-client density budgets, as text
      'density:fraction,...' (e.g. '0.05:0.3,0.1:0.3,0.2:0.4') or
      (density, fraction) pairs; None: every client keeps the global mask.
      Each density must be <= 1 - `sparsity` (and `sparsity` > 0). The
      process's client data is then `<data=B*, budget=float32>`: a client
      keeps, per layer, the largest |w| of the global mask within its budget
      (`sparsity.budgets`), trains (and readjusts) within it and uploads
      that sub-mask; the server keeps its value for a global weight no
      client uploaded. Which client has which budget is the training
      program's business (`sparsity.budgets.assign`).
    dp_noise_multiplier: z; turns on DP-FedAvg (see the module docstring):
      the clipped deltas' sum gets Gaussian noise of stddev z·C (0: clipping
      only). None: no differential privacy. Needs readjustment_ratio=0.
    dp_clip_norm: C, the L2 bound of each client's delta (fixed clipping).
    dp_adaptive_quantile: instead of `dp_clip_norm`, clip adaptively at this
      quantile of the update norms (Andrew et al. 2021; TFF's
      `gaussian_adaptive`, z then the effective total multiplier).
    dp_clients_per_round: the clients sampled per round; the DP mean divides
      by it, not by the clients that came. ε is reported by the training
      program (`privacy.accounting`).
    loop_implementation: the local training loop (`tff.learning`).
    model_distributor: replaces the sparse distributor
      (`templates.distributor`); it must send the same sparse payload.
    model_aggregator: replaces the masked-sum aggregator (DP: refused, the
      DP mean is the privacy mechanism); it must produce the masked sums
      the finalizer reads.
    metrics_aggregator: aggregates the clients' training metrics, as in
      tff.learning (default: summed, then finalized).
  """
  return packed_state.compose(build_feddst_components(**dict(locals())))


def build_feddst_components(
    model_fn: Callable[[], tf.keras.Model], **kwargs) -> skeleton.Components:
  """The parts `build_weighted_feddst` composes (for tests and custom loops).

  Takes exactly the keyword arguments of `build_weighted_feddst` (documented
  there).
  """
  a = skeleton.bind_arguments(build_weighted_feddst, 'build_feddst_components',
                              model_fn, kwargs)
  algorithm = 'feddst_prox' if a['prox_mu'] else 'feddst'
  registry.check_builder_args(algorithm, a)
  if a['regrowth_gradient_batches'] < 1:
    raise ValueError('regrowth_gradient_batches must be >= 1, got '
                     f'{a["regrowth_gradient_batches"]!r}.')
  skeleton.check_norm_bound(a['client_norm_bound'])
  dp_config = _dp_config(a['dp_noise_multiplier'], a['dp_clip_norm'],
                         a['dp_adaptive_quantile'], a['dp_clients_per_round'])
  if dp_config is not None and a['model_aggregator'] is not None:
    raise ValueError('model_aggregator cannot be used with '
                     'dp_noise_multiplier: the DP mean is the privacy '
                     'mechanism, which another aggregator would replace.')
  client_optimizer, server_optimizer = skeleton.checked_optimizers(
      client_optimizer_fn=a['client_optimizer_fn'],
      server_optimizer_fn=a['server_optimizer_fn'], loss_fn=a['loss_fn'])

  sparsity, distribution = a['sparsity'], a['sparsity_distribution']
  _, model = skeleton.prunable_model(model_fn, a['input_spec'], seed=a['seed'],
                                     initial_weights=a['initial_weights'])
  models_lib.apply_initial_masks(model, sparsity, distribution)
  layout = layout_lib.build_layout(model, sparsity, distribution)
  logging.info('FedDST layer densities (%s, S=%.3f): %s',
               distribution, sparsity, ', '.join(
                   f'{n}={c / s:.4f}' for n, c, s in zip(
                       layout.kernel_names, layout.live_counts,
                       layout.kernel_sizes)))
  trainable, non_trainable = skeleton.weight_arrays(model)
  count_table = finalizer_lib.live_count_table(
      layout, models_lib.kernel_shapes(model), sparsity, a['final_sparsity'],
      a['readjustment_end_round'], distribution,
      bias_sizes=models_lib.bias_sizes(model))
  rule = finalizer_lib.MaskRule(
      min_votes=a['min_votes'], remember_old=a['remember_old'],
      consensus_regrowth=a['consensus_regrowth'],
      fraction=a['readjustment_ratio'],
      rounds_between=a['rounds_between_readjustments'],
      end_round=a['readjustment_end_round'],
      schedule=a['readjustment_schedule'],
      live_count_table=count_table,
      keep_unheld=a['client_density_budgets'] is not None)

  if dp_config is not None:
    live = [int(np.sum(non_trainable[i] > 0)) for i in layout.mask_index]
    if live != list(layout.live_counts):  # The upload's length relies on it.
      raise AssertionError(f'initial masks keep {live} weights, the layout '
                           f'{list(layout.live_counts)}.')
  return skeleton.build_components(
      layout, trainable, non_trainable, client_optimizer=client_optimizer,
      hooks=skeleton.budget_hooks(a['client_density_budgets']) + (
          hooks.FedDSTReadjustment(
              fraction=a['readjustment_ratio'],
              rounds_between=a['rounds_between_readjustments'],
              end_round=a['readjustment_end_round'],
              schedule_name=a['readjustment_schedule'],
              gradient_batches=a['regrowth_gradient_batches'],
              after_epoch=a['readjust_after_epoch']),),
      always_dense=[min(row[i] for row in count_table) == size
                    for i, size in enumerate(layout.kernel_sizes)],
      aggregator_factory=(
          masked_mean.MaskedSumFactory(layout,
                                       norm_bound=a['client_norm_bound'])
          if dp_config is None else dp_aggregator_lib.DPMeanFactory(
              dp_config, norm_bound=a['client_norm_bound'])),
      build_finalizer=(
          functools.partial(finalizer_lib.build_mask_finalizer, layout,
                            server_optimizer=server_optimizer, rule=rule)
          if dp_config is None else
          functools.partial(dp_finalizer_lib.build_delta_finalizer, layout,
                            server_optimizer=server_optimizer)),
      adapt_client_work=None if dp_config is None else (
          lambda work: delta_client_work.build_delta_client_work(work,
                                                                 layout)),
      **skeleton.builder_parts(a, prox_mu=a['prox_mu']))
