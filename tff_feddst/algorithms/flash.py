"""FLASH (SPDST and JMWST) as a `tff.learning.templates.LearningProcess`.

Babakniya, Kundu, Prakash, Niu, Avestimehr. "Revisiting Sparsity Hunting in
Federated Learning: Why does Sparsity Consensus Matter?" TMLR 2023, arXiv
2208.13092. Read from the abstract and the authors' code
(SaraBabakN/flash_fl; memo docs/notes/field_methods.md §2). Our own
implementation, on the FedDST components (sparse distributor and wire
format, masked client work with FLASH's DST event, masked-sum aggregator,
and a FLASH finalizer); the rules are in `sparsity.flash`.

FLASH's (as its code does it):
* Stage 1 (both variants, `manager.initialize_mask`): clients start from
  the initial weights and a uniform random mask at density d and run local
  DST, pruning/regrowing after every local epoch but the last; the mean
  per-layer density of their masks, rescaled to total density d, gives
  each layer's density; the server draws a fresh random mask with that
  profile and restarts from the initial weights masked by it.
* Client DST (`core.Masking`): prune ⌈p·nnz_l⌉ smallest |w| per layer,
  redistribute the regrowth over layers by their mean |w|, regrow at random
  among the dead, at 0; p decays linearly from p_0 = 0.25 to 0 over each
  round's local steps.
* SPDST: after stage 1 the mask is static; clients train on it.
* JMWST: clients run the DST every round from the global mask; the server
  takes the mean over the clients holding each weight (`update_mode` 1)
  and keeps, per layer, the k_l = ⌊b_l·min(1, d·N/Σb)⌋ largest |w̄|, b_l the
  clients' mean live count (so per-layer densities drift, total ≤ d).

What we chose:
* Stage 1 is round 0 of the process, with that round's sampled clients and
  E local epochs (FLASH: a separate pass of `init_frac` clients for
  `init_epoch` epochs, not counted as a round); its uploads (the usual
  sparse payload, values and mask bits) are counted as round 0's uplink,
  although the server only uses the masks' per-layer counts.
* Exact counts instead of FLASH's expectations: the regrowth per layer is
  rounded to sum to the pruned count, the random draw is a seeded choice
  without replacement, and the stage-1 mask has exactly the profile's
  counts (largest-remainder rounding to ⌊Σ d_l n_l⌋ ≤ d·N) (`sparsity.flash`).
* Prune rate: p_0 of round r follows our α schedule
  (`readjustment_fraction` with α = `flash_prune_rate`; FLASH's own is
  `readjustment_schedule='constant'` with no end, our default), and the
  event after epoch e of E uses p_0·(1 − e/E), FLASH's in-round linear
  decay at that step; with E = 1 the one event comes after the epoch at
  p_0/2 (FLASH's falls mid-epoch, at ≈ p_0/2, so its regrown weights get half
  an epoch of training; ours reach the server at 0).
* The masked mean is unweighted, as FLASH's (no n_k weighting anywhere in
  its code), over the clients holding each weight; biases: the plain mean.
* The initial mask is uniform random per layer (FLASH's `get_rand_mask`),
  seeded; all prunable kernels of the model are masked (FLASH's ResNet
  prunes conv kernels only).
* Per-client density budgets (hetero-FLASH): a client keeps per layer the
  largest |w| of the global mask within its budget (`sparsity.budgets`, our
  sub-mask rule; FLASH's server builds the smaller masks by its top-|w̄|
  rule at density h·d, which ranks the same weights), and its DST keeps
  those per-layer counts (a layer regrows only what it pruned), so no
  client ever holds more than its budget in any layer. The server keeps
  the value of global weights no client uploaded, and JMWST then ranks with
  b_l = the aggregate's live count (FLASH's 'aggregate', which its code
  requires with hetero clients). A consequence: with budgets no client
  moves weights between layers, so stage 1 hands back (up to rounding) the
  initial uniform profile; FLASH runs its stage 1 at density d for everyone
  (before hetero clients join), which our per-layer budget forbids.
* Not supported: differential privacy (the masks are client-data
  dependent); the registry refuses it and the builder takes no DP arguments.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.aggregators import masked_mean
from tff_feddst.algorithms import registry
from tff_feddst.algorithms import skeleton
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.sparsity import flash as flash_lib
from tff_feddst.templates import flash_finalizer
from tff_feddst.templates import hooks
from tff_feddst.templates import packed_state

VARIANTS = ('spdst', 'jmwst')
DEFAULT_PRUNE_RATE = 0.25


def build_weighted_flash(
    model_fn: Callable[[], tf.keras.Model],
    *,
    variant: str,
    loss_fn: Any,
    input_spec: Any,
    metrics_fn: Callable[[], list[tf.keras.metrics.Metric]] | None = None,
    client_optimizer_fn: skeleton.OptimizerArg,
    server_optimizer_fn: skeleton.OptimizerArg | None = None,
    sparsity: float,
    flash_prune_rate: float = DEFAULT_PRUNE_RATE,
    readjustment_schedule: str = 'constant',
    readjustment_end_round: int | None = None,
    seed: int | None = None,
    client_epochs: int = 1,
    client_weight_decay: float = 0.0,
    client_norm_bound: float = 1e6,
    upload_dtype: str = 'float32',
    client_jit_compile: bool = False,
    initial_weights: Any = None,
    client_density_budgets: Any = None,
    loop_implementation: tff.learning.LoopImplementation = (
        tff.learning.LoopImplementation.DATASET_ITERATOR),
    model_distributor: tff.learning.templates.DistributionProcess | None = None,
    model_aggregator: tff.aggregators.WeightedAggregationFactory | None = None,
    metrics_aggregator: Callable | None = None,
) -> tff.learning.templates.LearningProcess:
  """Builds FLASH SPDST or JMWST (see the module docstring).

  Args:
    model_fn: no-arg callable returning a new, plain (unwrapped) Keras model;
      the library wraps it with TF-MOT.
    variant: 'spdst' (static mask after stage 1) or 'jmwst' (the server
      re-decides the mask every round).
    loss_fn: a `tf.keras.losses.Loss` or a no-arg callable returning one.
    input_spec: the batch spec, as in `tff.learning.models.from_keras_model`.
    metrics_fn: no-arg callable returning a list of Keras metrics.
    client_optimizer_fn: a `tff.learning.optimizers.Optimizer` (or no-arg
      callable returning one); FLASH uses plain SGD.
    server_optimizer_fn: optional server optimizer on W − mean from round 1
      on, re-masked. None: W := mean (FLASH).
    sparsity: S in (0, 1); the global masks keep at most (1 − S)·N weights.
    flash_prune_rate: p_0 in (0, 1], the clients' prune rate at the start of
      a round (FLASH: 0.25).
    readjustment_schedule: decay of p_0 over rounds, 'constant' (FLASH) or
      'cosine' (to 0 at `readjustment_end_round`); JMWST only.
    readjustment_end_round: no client DST from this round on (JMWST); None:
      never ends (FLASH).
    seed: seeds the init, the initial and stage-1 random masks and the
      clients' random regrowth.
    client_epochs: E, local epochs (DST events after epochs 1..E−1).
    client_weight_decay: coupled L2 λ (g + λ w).
    client_norm_bound: a client whose upload has an L2 norm above this (or a
      NaN/Inf) is left out of the round.
    upload_dtype: 'float32', 'bfloat16' or 'float16' for the uploaded values.
    client_jit_compile: XLA-compile each client training step.
    initial_weights: start from these weights (a Keras model with
      `model_fn`'s architecture or its weight arrays); stage 1 restarts
      from them.
    client_density_budgets: per-client density budgets ('d:f,...' text or
      pairs, each d <= 1 − S), as for FedDST; the client data is then
      `<data=B*, budget=float32*>` (module doc).
    loop_implementation: the local training loop (`tff.learning`).
    model_distributor: replaces the sparse distributor; it must send the
      same sparse payload.
    model_aggregator: replaces the unweighted masked sums; it must produce
      the masked sums the FLASH finalizer reads.
    metrics_aggregator: aggregates the clients' training metrics, as in
      tff.learning (default: summed, then finalized).
  """
  parts = build_flash_components(**dict(locals()))
  return packed_state.compose(parts)


def build_flash_components(
    model_fn: Callable[[], tf.keras.Model], **kwargs) -> skeleton.Components:
  """The parts `build_weighted_flash` composes (for tests and custom loops).

  Takes exactly the keyword arguments of `build_weighted_flash`.
  """
  a = skeleton.bind_arguments(build_weighted_flash, 'build_flash_components',
                              model_fn, kwargs)
  if a['variant'] not in VARIANTS:
    raise ValueError(f'variant must be one of {VARIANTS}, got '
                     f'{a["variant"]!r}.')
  registry.check_builder_args(f'flash_{a["variant"]}', a)
  skeleton.check_norm_bound(a['client_norm_bound'])
  client_optimizer, server_optimizer = skeleton.checked_optimizers(
      client_optimizer_fn=a['client_optimizer_fn'],
      server_optimizer_fn=a['server_optimizer_fn'], loss_fn=a['loss_fn'])
  seed = 0 if a['seed'] is None else int(a['seed'])

  # The layout's live counts are the kernel sizes: an upper bound of every
  # layer's count (stage 1 and JMWST move them), which the aggregator's
  # fixed-length sums need.
  _, model = skeleton.prunable_model(model_fn, a['input_spec'],
                                     seed=a['seed'],
                                     initial_weights=a['initial_weights'])
  layout = layout_lib.build_layout(model, 0.0, 'uniform')
  trainable, non_trainable = skeleton.weight_arrays(model)
  initial_kernels, initial_dense = flash_finalizer.initial_arrays(
      layout, trainable, non_trainable)
  _apply_random_masks(layout, trainable, non_trainable, 1.0 - a['sparsity'],
                      seed)
  jmwst = a['variant'] == 'jmwst'
  rule = flash_finalizer.FlashServerRule(
      dynamic=jmwst, density=1.0 - a['sparsity'], seed=seed,
      initial_kernels=initial_kernels, initial_dense=initial_dense,
      keep_unheld=a['client_density_budgets'] is not None)
  return skeleton.build_components(
      layout, trainable, non_trainable, client_optimizer=client_optimizer,
      hooks=skeleton.budget_hooks(a['client_density_budgets']) + (
          hooks.FlashDST(flash_lib.ClientDST(
              rate=a['flash_prune_rate'],
              schedule=a['readjustment_schedule'] if jmwst else 'constant',
              end_round=a['readjustment_end_round'] if jmwst else None,
              stage_one_only=not jmwst, seed=seed)),),
      aggregator_factory=_UnweightedFactory(masked_mean.MaskedSumFactory(
          layout, norm_bound=a['client_norm_bound'])),
      build_finalizer=functools.partial(
          flash_finalizer.build_flash_finalizer, layout,
          server_optimizer=server_optimizer, rule=rule),
      **skeleton.builder_parts(a))


def initial_mask_counts(layout: layout_lib.ModelLayout, density: float
                        ) -> list[int]:
  """Uniform density d per layer, rounded to a total of ⌊d·N⌋."""
  return [int(c) for c in flash_lib.layer_profile_counts(
      [float(s) for s in layout.kernel_sizes], layout.kernel_sizes,
      density).numpy()]


def _apply_random_masks(layout, trainable, non_trainable, density: float,
                        seed: int) -> None:
  """In place: uniform random masks (FLASH's get_rand_mask), exact counts."""
  rng = np.random.default_rng([seed, 0xF1A5])
  for i, j, shape, count in zip(layout.kernel_index, layout.mask_index,
                                layout.kernel_shapes,
                                initial_mask_counts(layout, density)):
    size = int(np.prod(shape))
    mask = np.zeros(size, np.float32)
    mask[rng.choice(size, count, replace=False)] = 1.0
    mask = mask.reshape(shape)
    non_trainable[j] = mask.astype(non_trainable[j].dtype)
    trainable[i] = (trainable[i] * mask).astype(trainable[i].dtype)


class _UnweightedFactory(tff.aggregators.WeightedAggregationFactory):
  """`inner`'s process with every client's weight 1 (FLASH does not weight
  by n_k)."""

  def __init__(self, inner: tff.aggregators.WeightedAggregationFactory):
    self._inner = inner

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    return _unweighted(self._inner.create(value_type, weight_type))


def _unweighted(process: tff.templates.AggregationProcess
                ) -> tff.templates.AggregationProcess:
  """`process` with every client's weight 1 (FLASH does not weight by n_k)."""
  next_type = process.next.type_signature.parameter
  weight_type = next_type[2]

  @tff.tensorflow.computation(weight_type.member)
  def one(weight):
    return tf.ones_like(weight)

  @tff.federated_computation(next_type[0], next_type[1], weight_type)
  def next_fn(state, value, weight):
    return process.next(state, value, tff.federated_map(one, weight))

  return tff.templates.AggregationProcess(process.initialize, next_fn)
