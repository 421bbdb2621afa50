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

import collections
from collections.abc import Callable, Mapping
import inspect
import types
from typing import Any, NamedTuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import models as models_lib
from tff_feddst import runtime
from tff_feddst import sparse as sparse_lib
from tff_feddst import sparsity as sparsity_lib
from tff_feddst.aggregators import masked_mean
from tff_feddst.privacy import aggregator as dp_aggregator_lib
from tff_feddst.privacy import delta_client_work
from tff_feddst.privacy import finalizer as dp_finalizer_lib
from tff_feddst.templates import client_work as client_work_lib
from tff_feddst.templates import distributor as distributor_lib
from tff_feddst.templates import finalizer as finalizer_lib
from tff_feddst.templates import hooks
from tff_feddst.templates import packed_state
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.sparsity import budgets as budgets_lib

OptimizerArg = (tff.learning.optimizers.Optimizer |
                Callable[[], tff.learning.optimizers.Optimizer])


def _optimizer(arg: OptimizerArg | None, name: str):
  if arg is None or isinstance(arg, tff.learning.optimizers.Optimizer):
    return arg
  if callable(arg):
    opt = arg()
    if isinstance(opt, tff.learning.optimizers.Optimizer):
      return opt
  raise TypeError(
      f'{name} must be a tff.learning.optimizers.Optimizer (e.g. '
      f'tff.learning.optimizers.build_sgdm(0.01, momentum=0.9)) or a no-arg '
      f'callable returning one; got {arg!r}. Keras optimizers are not supported.')


def _check_args(sparsity, readjustment_ratio, rounds_between_readjustments,
                readjustment_end_round, prox_mu, min_votes, client_epochs,
                client_weight_decay, regrowth_gradient_batches,
                client_norm_bound, readjust_after_epoch, final_sparsity):
  checks = [
      (readjust_after_epoch is None or
       1 <= readjust_after_epoch <= client_epochs, 'readjust_after_epoch',
       f'in [1, client_epochs={client_epochs}] (or None: after the last '
       'epoch)', readjust_after_epoch),
      (final_sparsity is None or 0.0 <= final_sparsity < 1.0,
       'final_sparsity', 'in [0, 1) (or None: constant sparsity)',
       final_sparsity),
      (final_sparsity is None or final_sparsity >= sparsity,
       'final_sparsity', f'>= sparsity={sparsity} (the server can only prune '
       'towards it; growing the density would add weights no client kept)',
       final_sparsity),
      (0.0 <= sparsity < 1.0, 'sparsity', 'in [0, 1)', sparsity),
      (0.0 <= readjustment_ratio <= 1.0, 'readjustment_ratio', 'in [0, 1]',
       readjustment_ratio),
      (rounds_between_readjustments >= 1, 'rounds_between_readjustments',
       '>= 1', rounds_between_readjustments),
      (readjustment_end_round >= 0, 'readjustment_end_round', '>= 0',
       readjustment_end_round),
      (prox_mu >= 0.0, 'prox_mu', '>= 0', prox_mu),
      (min_votes >= 0, 'min_votes', '>= 0', min_votes),
      (client_epochs >= 1, 'client_epochs', '>= 1', client_epochs),
      (client_weight_decay >= 0.0, 'client_weight_decay', '>= 0',
       client_weight_decay),
      (regrowth_gradient_batches >= 1, 'regrowth_gradient_batches', '>= 1',
       regrowth_gradient_batches),
      (client_norm_bound > 0, 'client_norm_bound', '> 0', client_norm_bound),
  ]
  for ok, name, expected, value in checks:
    if not ok:
      raise ValueError(f'{name} must be {expected}, got {value!r}.')


def _dp_config(noise_multiplier, clip_norm, adaptive_quantile,
               clients_per_round, *, readjustment_ratio, upload_dtype,
               final_sparsity) -> dp_aggregator_lib.DPConfig | None:
  """The DP setting (None: off), refusing what DP mode cannot do."""
  if noise_multiplier is None:
    for name, value in (('dp_clip_norm', clip_norm),
                        ('dp_adaptive_quantile', adaptive_quantile),
                        ('dp_clients_per_round', clients_per_round)):
      if value is not None:
        raise ValueError(f'{name}={value!r} needs dp_noise_multiplier (None: '
                         'no differential privacy).')
    return None
  refusals = [
      (readjustment_ratio > 0, 'readjustment_ratio', readjustment_ratio,
       'must be 0 with differential privacy: the global mask is fixed in DP '
       'mode, because readjusted client masks (and the server\'s vote counts '
       'over them) would reveal which weights each client keeps, outside the '
       'noised sum. Use RandomMask (S>0) or FedAvg (S=0)'),
      (upload_dtype != 'float32', 'upload_dtype', upload_dtype,
       "must be 'float32' with differential privacy (the clipped, noised "
       'delta is summed in float32)'),
      (final_sparsity is not None, 'final_sparsity', final_sparsity,
       'must be None with differential privacy (the mask is fixed, so its '
       'sparsity cannot move)'),
      (clients_per_round is None, 'dp_clients_per_round', clients_per_round,
       'is required with differential privacy: the clients sampled per '
       'round, the fixed denominator of the mean'),
  ]
  for refused, name, value, why in refusals:
    if refused:
      raise ValueError(f'{name}={value!r} {why}.')
  return dp_aggregator_lib.DPConfig(
      noise_multiplier=noise_multiplier, clients_per_round=clients_per_round,
      clip_norm=clip_norm, adaptive_quantile=adaptive_quantile)


def _budget_densities(value, sparsity: float, dp_config
                      ) -> tuple[float, ...] | None:
  """The budget groups' densities (sorted), refusing what cannot work."""
  if value is None:
    return None
  parsed = budgets_lib.parse(value)
  budgets_lib.check_sparsity(parsed, sparsity)
  if dp_config is not None:
    raise ValueError('client_density_budgets cannot be used with '
                     'dp_noise_multiplier: DP runs upload a fixed-length '
                     'delta over the one global mask.')
  return tuple(b.density for b in parsed)


def _budget_hooks(budgets) -> tuple[hooks.ClientHook, ...]:
  """The client hooks of per-client density budgets (none without)."""
  return (hooks.DensityBudgets(budgets),) if budgets else ()


def _unordered_dicts(spec, path='input_spec'):
  """(path, keys) of the plain dicts in `spec` whose keys are not in sorted
  order."""
  if isinstance(spec, dict):
    found = ([(path, list(spec))]
             if not isinstance(spec, collections.OrderedDict) and
             list(spec) != sorted(spec) else [])
    for key, value in spec.items():
      found += _unordered_dicts(value, f'{path}[{key!r}]')
    return found
  if isinstance(spec, (tuple, list)):
    return [p for i, v in enumerate(spec)
            for p in _unordered_dicts(v, f'{path}[{i}]')]
  return []


def _check_input_spec(input_spec, model: tf.keras.Model):
  """Fails early on client data TFF cannot take, which would otherwise
  surface deep inside TFF's tracing or at the first `next`: an unbatched
  spec (a client dataset's element_spec taken before `.batch`), or a plain
  dict whose keys are out of sorted order (TFF refuses to serialize such a
  dataset: `tf.nest` orders a dict's values by sorted key)."""
  unordered = _unordered_dicts(input_spec)
  if unordered:
    path, keys = unordered[0]
    raise ValueError(
        f'{path} is a dict with keys {keys} out of sorted order, which TFF '
        'cannot serialize as client data. Build the dataset elements with collections.OrderedDict, or a dict '
        'whose keys are in sorted order.')
  x_spec = (input_spec['x'] if isinstance(input_spec, dict) else
            input_spec[0] if isinstance(input_spec, (tuple, list)) else None)
  try:
    model_rank = len(model.input_shape)
  except (AttributeError, TypeError):  # Several inputs or no input shape.
    return
  if not isinstance(x_spec, tf.TensorSpec) or x_spec.shape.rank is None:
    return
  if x_spec.shape.rank == model_rank - 1:
    raise ValueError(
        f'input_spec looks unbatched: x has shape {x_spec.shape} but the '
        f'model takes {model.input_shape} (batch dimension first). Pass the '
        'spec of the batched client datasets, e.g. '
        '`tff_feddst.program.batch_input_spec(data, batch_size)` or '
        '`dataset.batch(b).element_spec`.')


class _InitialModel(NamedTuple):
  """The masked initial weights (numpy) and what the builders need of them."""
  layout: layout_lib.ModelLayout
  trainable: list[np.ndarray]
  non_trainable: list[np.ndarray]
  kernel_shapes: list[tuple[int, ...]]
  bias_sizes: list[int]


def _initial_model(model_fn, input_spec, sparsity: float, distribution: str, *,
                   seed, initial_weights) -> _InitialModel:
  """Builds, wraps and magnitude-prunes the initial model, eagerly, once.

  Computed once (not inside a TFF computation) so that `seed` fixes it.
  """
  if seed is not None:
    tf.keras.utils.set_random_seed(seed)
  plain_model = model_fn()
  if initial_weights is not None:
    models_lib.copy_weights(plain_model, initial_weights)
  model = models_lib.make_prunable(plain_model)
  _check_input_spec(input_spec, model)
  models_lib.apply_initial_masks(model, sparsity, distribution)
  layout = layout_lib.build_layout(model, sparsity, distribution)
  logging.info('FedDST layer densities (%s, S=%.3f): %s', distribution,
               sparsity, ', '.join(
                   f'{n}={c / s:.4f}' for n, c, s in zip(
                       layout.kernel_names, layout.live_counts,
                       layout.kernel_sizes)))
  return _InitialModel(
      layout, [v.numpy() for v in model.trainable_weights],
      [v.numpy() for v in model.non_trainable_weights],
      models_lib.kernel_shapes(model), models_lib.bias_sizes(model))


def _training_models_fn(model_fn, loss_fn, input_spec, metrics_fn):
  """The client work's `models_fn`: (TF-MOT-wrapped Keras model, tff model).

  TF-MOT wraps the user's layers themselves, so the plain model shares every
  variable with the wrapped one. Clients train through the plain model: the
  masks stay in TF-MOT's variables and are applied after every step, which
  makes the wrapper's own per-forward `kernel * mask` copy redundant (it cost
  ~10% of the round time).
  """
  def models_fn():
    plain = model_fn()
    wrapped = models_lib.make_prunable(plain, log=False)
    same = ([v.ref() for v in plain.trainable_weights] ==
            [v.ref() for v in wrapped.trainable_weights])
    forward_model = plain if same else wrapped
    model = tff.learning.models.from_keras_model(
        forward_model, loss=models_lib.loss_instance(loss_fn),
        input_spec=input_spec,
        metrics=metrics_fn() if metrics_fn else None)
    return wrapped, model

  return models_fn


class FedDSTComponents(NamedTuple):
  """The parts `build_weighted_feddst` composes (for tests and custom loops)."""
  layout: layout_lib.ModelLayout
  initial_model_weights_fn: tff.Computation
  distributor: tff.learning.templates.DistributionProcess
  client_work: tff.learning.templates.ClientWorkProcess
  aggregator: tff.templates.AggregationProcess
  finalizer: tff.learning.templates.FinalizerProcess


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
  """
  parts = _build_components(dict(locals()))
  return packed_state.compose(parts)


def build_feddst_components(model_fn: Callable[[], tf.keras.Model], **kwargs
                            ) -> FedDSTComponents:
  """The parts `build_weighted_feddst` composes (for tests and custom loops).

  Takes exactly the keyword arguments of `build_weighted_feddst`.
  """
  return _build_components(bind_arguments(
      build_weighted_feddst, 'build_feddst_components', model_fn, kwargs))


def bind_arguments(builder: Callable[..., Any], components_name: str,
                   model_fn, kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """`builder`'s arguments (defaults filled in) for its `*_components`
  twin, which takes exactly them; an unknown or missing one is named."""
  try:
    bound = inspect.signature(builder).bind(model_fn, **kwargs)
  except TypeError as e:
    raise TypeError(f'{components_name} takes the arguments of '
                    f'{builder.__name__}: {e}') from None
  bound.apply_defaults()
  return dict(bound.arguments)


def checked_optimizers(arguments: Mapping[str, Any]):
  """(client optimizer, server optimizer or None) of a builder's arguments,
  after checking them and the loss; then owns TFF's default context (our
  worker, not TFF's, which outlives Python). Every sparse builder's last
  check before it builds anything."""
  client_optimizer = _optimizer(arguments['client_optimizer_fn'],
                                'client_optimizer_fn')
  if client_optimizer is None:
    raise TypeError('client_optimizer_fn is required.')
  server_optimizer = _optimizer(arguments['server_optimizer_fn'],
                                'server_optimizer_fn')
  models_lib.loss_instance(arguments['loss_fn'])  # Fail early on a bad loss.
  runtime.own_default_context()
  return client_optimizer, server_optimizer


def _build_components(arguments: dict[str, Any]) -> FedDSTComponents:
  """The FedDST pieces from the builder's (checked here) arguments."""
  a = types.SimpleNamespace(**arguments)
  _check_args(a.sparsity, a.readjustment_ratio,
              a.rounds_between_readjustments, a.readjustment_end_round,
              a.prox_mu, a.min_votes, a.client_epochs, a.client_weight_decay,
              a.regrowth_gradient_batches, a.client_norm_bound,
              a.readjust_after_epoch, a.final_sparsity)
  upload_tf_dtype = sparse_lib.codec.upload_dtype(a.upload_dtype)
  dp_config = _dp_config(
      a.dp_noise_multiplier, a.dp_clip_norm, a.dp_adaptive_quantile,
      a.dp_clients_per_round, readjustment_ratio=a.readjustment_ratio,
      upload_dtype=a.upload_dtype, final_sparsity=a.final_sparsity)
  budgets = _budget_densities(a.client_density_budgets, a.sparsity, dp_config)
  if a.sparsity_distribution not in sparsity_lib.DISTRIBUTIONS:
    raise ValueError(f'sparsity_distribution must be one of '
                     f'{sparsity_lib.DISTRIBUTIONS}, got '
                     f'{a.sparsity_distribution!r}.')
  sparsity_lib.schedules.check_schedule(a.readjustment_schedule)
  client_optimizer, server_optimizer = checked_optimizers(arguments)

  start = _initial_model(a.model_fn, a.input_spec, a.sparsity,
                         a.sparsity_distribution, seed=a.seed,
                         initial_weights=a.initial_weights)
  layout = start.layout
  count_table = finalizer_lib.live_count_table(
      layout, start.kernel_shapes, a.sparsity, a.final_sparsity,
      a.readjustment_end_round, a.sparsity_distribution,
      bias_sizes=start.bias_sizes)

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights(
        [tf.constant(w) for w in start.trainable],
        [tf.constant(w) for w in start.non_trainable])

  weights_type = initial_model_weights_fn.type_signature.result
  models_fn = _training_models_fn(a.model_fn, a.loss_fn, a.input_spec,
                                  a.metrics_fn)
  distributor = distributor_lib.build_sparse_distributor(layout, weights_type)
  payload_type = distributor.next.type_signature.result.result.member
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(a.input_spec))
  client_work = client_work_lib.build_masked_client_work(
      models_fn, layout, payload_type, data_type,
      optimizer=client_optimizer,
      training=client_work_lib.LocalTrainingConfig(
          epochs=a.client_epochs, weight_decay=a.client_weight_decay,
          prox_mu=a.prox_mu, upload_dtype=upload_tf_dtype,
          jit_compile=bool(a.client_jit_compile)),
      hooks=_budget_hooks(budgets) + (hooks.FedDSTReadjustment(
          fraction=a.readjustment_ratio,
          rounds_between=a.rounds_between_readjustments,
          end_round=a.readjustment_end_round,
          schedule_name=a.readjustment_schedule,
          gradient_batches=a.regrowth_gradient_batches,
          after_epoch=a.readjust_after_epoch),),
      loop_implementation=a.loop_implementation,
      always_dense=[min(row[i] for row in count_table) == size
                    for i, size in enumerate(layout.kernel_sizes)])
  if dp_config is not None:
    return _dp_components(start, initial_model_weights_fn, distributor,
                          client_work, dp_config,
                          norm_bound=a.client_norm_bound,
                          server_optimizer=server_optimizer)
  client_result_type = client_work.next.type_signature.result.result.member
  aggregator = masked_mean.MaskedSumFactory(
      layout, norm_bound=a.client_norm_bound).create(
      client_result_type.update, client_result_type.update_weight)
  sums_type = aggregator.next.type_signature.result.result.member
  finalizer = finalizer_lib.build_mask_finalizer(
      layout, weights_type, sums_type, server_optimizer=server_optimizer,
      rule=finalizer_lib.MaskRule(
          min_votes=a.min_votes, remember_old=a.remember_old,
          consensus_regrowth=a.consensus_regrowth,
          fraction=a.readjustment_ratio,
          rounds_between=a.rounds_between_readjustments,
          end_round=a.readjustment_end_round, schedule=a.readjustment_schedule,
          live_count_table=count_table, keep_unheld=bool(budgets)))
  return FedDSTComponents(layout, initial_model_weights_fn, distributor,
                          client_work, aggregator, finalizer)


def _dp_components(start: _InitialModel, initial_model_weights_fn,
                   distributor, masked_work, config, *, norm_bound,
                   server_optimizer) -> FedDSTComponents:
  """DP mode: delta uploads, TFF's DP mean, the fixed-mask finalizer."""
  layout = start.layout
  live = [int(np.sum(start.non_trainable[i] > 0)) for i in layout.mask_index]
  if live != list(layout.live_counts):  # The upload's length relies on it.
    raise AssertionError(f'initial masks keep {live} weights, the layout '
                         f'{list(layout.live_counts)}.')
  client_work = delta_client_work.build_delta_client_work(masked_work, layout)
  result_type = client_work.next.type_signature.result.result.member
  aggregator = dp_aggregator_lib.DPMeanFactory(
      config, norm_bound=norm_bound).create(result_type.update,
                                            result_type.update_weight)
  finalizer = dp_finalizer_lib.build_delta_finalizer(
      layout, initial_model_weights_fn.type_signature.result,
      aggregator.next.type_signature.result.result.member,
      server_optimizer=server_optimizer)
  return FedDSTComponents(layout, initial_model_weights_fn, distributor,
                          client_work, aggregator, finalizer)
