"""PruneFL as a `tff.learning.templates.LearningProcess`.

Jiang, Wang, Valls, Ko, Lee, Leung, Tassiulas. "Model Pruning Enables
Efficient Federated Learning on Edge Devices." IEEE TNNLS 2022, arXiv
1909.12326. Read from the abstract and the authors' code (jiangyuang/PruneFL
at d3f38c4, configs at 0ae1715); the paper's method section could not be
retrieved, and FedDST's reimplementation (bibikar/feddst `prunefl.py`)
differs from the authors' (memo: docs/notes/field_methods.md §1). Our own
implementation, on the FedDST components (sparse distributor and wire
format, masked client work, masked sums) plus an importance upload and a
PruneFL finalizer.

The authors' rules, point by point (their files), and ours:

1. Objective (`control/algorithm.py`: `main_control`,
   `architecture_search`): the mask maximises R(M) = (S0 + Σ_{j∈M} s_j) /
   (c + Σ_{j∈M} t_l), the approximate empirical-risk reduction per unit of
   round time. Ours: `sparsity.prunefl.reconfigure` (checked against brute
   force), its TensorFlow copy `sparsity.prunefl_tf` on the server.
2. Protected core (`process_layer`; `prune_by_pct` in `bases/nn/conv2d.py`,
   `linear.py`): per layer the live weights outside the smallest-|w| share
   δ stay; δ = MAX_DEC_DIFF = 0.3 (`configs/*.py`). Same
   (`prunefl_max_decrease`).
3. Greedy (`architecture_search`, `utils/heap_queue.py`): the rest, live or
   not, join by decreasing s/t while that beats R. Same (one sort for their
   heap; ties by layer, then index).
4. S0 (`main_control`, `process_layer`): the importance of the
   non-prunable params and the prunable layers' biases. Same: the dense
   params'.
5. Density limit (`--max-density`, `AdaptiveFL.main` in
   `bases/fl/simulation/adaptive.py`): the greedy stops at the cap. Ours:
   `sparsity` = S > 0 caps the density at 1 − S (0: no cap), so PruneFL can
   be compared at S. Theirs tests before adding and may end one weight
   over; ours stops at it. Their anneal to `--target-density` is not
   offered.
6. Initial pruning (`AdaptiveServer.initial_pruning`, IP_* in
   `configs/*.py`): one client trains the dense model; its accuracy is
   checked every 10 rounds of 10 steps until it reaches 1.5 / classes; the
   rule runs at the end of that round and then every 50 rounds (500 steps)
   on Σ_steps g², g through w ⊙ M; it stops once the density moved by at
   most 10% five times in a row, or after 1000 rounds. Ours
   (`prunefl_initial_pruning`): the same in local steps, every k =
   `prunefl_initial_interval_steps` (500) steps, at most
   `prunefl_initial_reconfigurations` (20) × k steps. Differences: the
   client is the one drawn for round 0 (theirs: user 0), and it trains on
   all of its data, pass after pass, with the clients' optimizer (theirs:
   10 stored batches of 20, plain SGD).
7. Federated importance (`AdaptiveClient.main`, `AdaptiveServer.main`):
   every round each client adds n_k · (Σ_{its steps} g)², g the dense loss
   gradient at w ⊙ M and n_k its examples, and uploads the sum when the
   server reconfigures; the server adds the clients' sums. Ours: the same
   sum over the rounds since the last reconfiguration, but our clients are
   sampled and stateless: they upload (Σ g)² every round
   (`sparse.ImportanceUpload`) and the server keeps the sum
   in its state (`templates.prunefl_finalizer`, checkpointed). So the sum
   covers the clients sampled in those rounds (theirs: all 10 clients,
   every round), and the importance travels every round: 4 bytes per
   kernel weight and 4 for S0 per client, counted in `round/uplink_bytes`
   (theirs: once per client per R_adj rounds). Their
   `accumulated_grad[key] = param.grad` aliases the gradient (2 · g_last
   instead of Σ g on PyTorch < 2); ours is the sum.
8. Schedule (`AdaptiveFL.check_adj_round`, ADJ_INTERVAL = 50): the first
   reconfiguration after R_adj rounds, then every R_adj
   (`rounds_between_readjustments`; `prunefl.is_reconfiguration_round`);
   their δ halves every ADJ_HALF_LIFE = 10000 rounds, ours stays (0.297
   instead of 0.3 at round 150).
9. Aggregation (`AdaptiveServer.main`): the example-weighted mean of the
   clients' live values; a pruned weight keeps its last server value and a
   weight that re-enters resumes from it. Same (`dormant` in the
   finalizer's state); optional server optimizer.
10. Time model (`configs/*.py`, `main_control`, `est_time` in
   `AdaptiveServer.main`): t_l = E · COMP_COEFFICIENTS_SINGLE[l] +
   COMM_COEFFICIENT and c = TIME_CONSTANT = E · SPARSE_TIME, measured on a
   Raspberry Pi: seconds per live weight per local step of 20 examples
   (the first conv's is 0 in three of their four configs), the link per
   weight both ways, the step of the pruned model. Ours
   (`sparsity.prunefl.TimeModel`): t_l = n · compute_l + (b_up + b_down) /
   bandwidth, c = overhead + fixed_bytes / bandwidth + n · base, n the
   examples of a client-round, with `prunefl_time_coefficients`:
   - measured: a JSON file from `benchmarks/prunefl_time_coefficients.py`,
     seconds per weight per example of one of our local steps on this
     machine with the layer's weights present vs absent; base: the step
     with all absent; overhead default 0; or
   - 'flops' (default): compute_l = 6 · P_l / `prunefl_compute_gflops`
     (default 14.4 GFLOP/s, the floor of plain TF training on this 2-core
     machine, docs/performance.md), base 0, overhead default 1 s (for the
     mask-independent work; their FEMNIST TIME_CONSTANT is 6.25 s).
   Differences: TensorFlow runs every kernel densely, so no client of ours
   saves time on a pruned weight; the measured numbers are what a client
   whose kernels cost in proportion to their live weights would save (their
   sparse kernels' premise), found by removing layers. Here the first conv
   is not free: per weight it costs hundreds of fc1 weights, near its FLOP
   ratio (benchmarks/prunefl_times/); their 0 belongs to their device and
   kernels (their timing script is not public). The link is modelled:
   `prunefl_bandwidth_mbps` (default 1 MB/s, their reference: 8 bytes per
   weight is 8e-6 s; they measured 5.56e-6), and c also counts what every
   round sends whatever the mask (dense params both ways, mask bits down);
   their c has no link term.
11. Traffic: the importance is counted where it travels (7.); the initial
   pruning's (the dense model down, the pruned one up with its mask, once)
   starts the cumulative counts (`round/cumulative_uplink_bytes`, ...).
12. Local training is the shared setting of our runs (E epochs of a
   client's data, `client_*`), not theirs (5 steps of 20 examples).
   Not supported: per-client density budgets (PruneFL sizes the global
   model itself) and differential privacy (masks and dense squared
   gradients depend on the clients' data outside any noised sum); the
   registry refuses both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import functools
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import choices
from tff_feddst import sparse as sparse_lib
from tff_feddst.aggregators import importance as importance_lib
from tff_feddst.algorithms import prunefl_initial_pruning
from tff_feddst.algorithms import registry
from tff_feddst.algorithms import skeleton
from tff_feddst.sparse import codec
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.sparsity import prunefl
from tff_feddst.templates import hooks
from tff_feddst.templates import packed_state
from tff_feddst.templates import prunefl_finalizer

# The FLOP-derived compute times (`prunefl_time_coefficients`).
FLOPS = choices.PRUNEFL_FLOPS
DEFAULT_BANDWIDTH_MBPS = 1.0
DEFAULT_COMPUTE_GFLOPS = 14.4
# The round time besides the modelled parts: with 'flops' 1 s stands for the
# compute no mask changes; measured coefficients measure that part.
DEFAULT_ROUND_OVERHEAD = 1.0
MEASURED_ROUND_OVERHEAD = 0.0


def build_weighted_prunefl(
    model_fn: Callable[[], tf.keras.Model],
    *,
    loss_fn: Any,
    input_spec: Any,
    initial_client_data: tf.data.Dataset | None = None,
    metrics_fn: Callable[[], list[tf.keras.metrics.Metric]] | None = None,
    client_optimizer_fn: skeleton.OptimizerArg,
    server_optimizer_fn: skeleton.OptimizerArg | None = None,
    sparsity: float = 0.0,
    rounds_between_readjustments: int = 50,
    prunefl_max_decrease: float = prunefl.DEFAULT_MAX_DECREASE,
    prunefl_time_coefficients: str | Mapping[str, Any] = FLOPS,
    prunefl_bandwidth_mbps: float = DEFAULT_BANDWIDTH_MBPS,
    prunefl_compute_gflops: float | None = None,
    prunefl_round_overhead: float | None = None,
    prunefl_initial_interval_steps: int = (
        prunefl.DEFAULT_INITIAL_INTERVAL_STEPS),
    prunefl_initial_reconfigurations: int = (
        prunefl.DEFAULT_INITIAL_RECONFIGURATIONS),
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
  """Builds PruneFL (see the module docstring).

  Args:
    model_fn: no-arg callable returning a new, plain (unwrapped) Keras model;
      the library wraps it with TF-MOT.
    loss_fn: a `tf.keras.losses.Loss` or a no-arg callable returning one.
    input_spec: the batch spec, as in `tff.learning.models.from_keras_model`.
    initial_client_data: the selected client's batched training data, for
      the initial pruning (required; `program.initial_client_dataset`).
    metrics_fn: no-arg callable returning a list of Keras metrics.
    client_optimizer_fn: a `tff.learning.optimizers.Optimizer` (or no-arg
      callable returning one), also the selected client's.
    server_optimizer_fn: optional server optimizer on W − mean, re-masked.
      None: W := mean (PruneFL).
    sparsity: S in [0, 1): the density is capped at 1 − S; 0: no cap.
    rounds_between_readjustments: R_adj, rounds between reconfigurations.
    prunefl_max_decrease: δ in [0, 1), the share of a layer's live weights a
      reconfiguration may drop (smallest |w| first).
    prunefl_time_coefficients: the per-layer compute seconds of the time
      model: 'flops' (from FLOPs at `prunefl_compute_gflops`), or measured
      (`benchmarks/prunefl_time_coefficients.py`): its JSON file's path, text
      or mapping (`sparsity.prunefl.load_measured_compute`).
    prunefl_bandwidth_mbps: the modelled client link, MB/s (> 0).
    prunefl_compute_gflops: with 'flops', the modelled client training
      rate, GFLOP/s (> 0; None: 14.4); measured: must be None.
    prunefl_round_overhead: the modelled fixed time of a round besides the
      link and the measured compute, s (>= 0; None: 1 with 'flops', 0
      measured).
    prunefl_initial_interval_steps: k, the initial pruning's local steps
      between reconfigurations (>= 1; the authors' 500).
    prunefl_initial_reconfigurations: at most this many in the initial
      pruning, which trains at most this many × k local steps (>= 1).
    seed: seeds the init.
    client_epochs: E, local epochs.
    client_weight_decay: coupled L2 λ (g + λ w).
    client_norm_bound: a client whose upload has an L2 norm above this (or a
      NaN/Inf) is left out of the round.
    upload_dtype: 'float32', 'bfloat16' or 'float16' for the uploaded values
      (the importance always travels in float32).
    client_jit_compile: XLA-compile each client training step.
    initial_weights: start from these weights (a Keras model with
      `model_fn`'s architecture or its weight arrays) instead of the seeded
      init; the initial pruning starts from them.
    loop_implementation: the local training loop (`tff.learning`).
    model_distributor: replaces the sparse distributor; it must send the
      same sparse payload.
    model_aggregator: replaces the importance sums; it must produce the
      sums the PruneFL finalizer reads (`aggregators.importance`).
    metrics_aggregator: aggregates the clients' training metrics, as in
      tff.learning (default: summed, then finalized).
  """
  parts = build_prunefl_components(**dict(locals()))
  return packed_state.compose(parts)


def _check_args(a) -> None:
  """The registry's option rules, then what no option holds."""
  registry.check_builder_args('prunefl', a)
  skeleton.check_norm_bound(a['client_norm_bound'])
  if a['initial_client_data'] is None:
    raise ValueError(
        'initial_client_data is required: PruneFL starts with initial '
        'pruning on one selected client (its batched training data, e.g. '
        '`tff_feddst.program.initial_client_dataset(federated, batch_size, '
        'seed=seed)`).')


def time_options(a: Mapping[str, Any]) -> tuple[Any, float | None, float]:
  """(measured compute or None for 'flops', GFLOP/s or None, overhead) of the
  builder's arguments, defaults filled in; ValueError naming the argument."""
  value = a['prunefl_time_coefficients']
  if isinstance(value, str) and value == FLOPS:
    return (None, _or(a['prunefl_compute_gflops'], DEFAULT_COMPUTE_GFLOPS),
            _or(a['prunefl_round_overhead'], DEFAULT_ROUND_OVERHEAD))
  measured = prunefl.load_measured_compute(value)  # Checked by the registry.
  return (measured, None, _or(a['prunefl_round_overhead'],
                              MEASURED_ROUND_OVERHEAD))


def _or(value, default):
  return default if value is None else value


def time_model(layout: layout_lib.ModelLayout, *, upload_bytes: int,
               bandwidth_mbps: float, overhead_seconds: float,
               compute_gflops: float | None = None,
               measured: prunefl.MeasuredCompute | None = None
               ) -> prunefl.TimeModel:
  """The round-time model of `layout`'s model (`sparsity.prunefl.TimeModel`):
  compute times `measured`, or from FLOPs at `compute_gflops` (None given);
  `upload_bytes` per uploaded value (the downlink sends float32)."""
  dense = sum(int(np.prod(s.shape)) for s in layout.dense_specs)
  mask_bytes = sum((n + 7) // 8 for n in layout.kernel_sizes)
  if measured is None:
    compute = prunefl.flop_compute_seconds(layout.output_positions,
                                           compute_gflops * 1e9)
    base = 0.0
  else:
    if tuple(measured.kernel_sizes) != tuple(layout.kernel_sizes):
      raise ValueError(
          'prunefl_time_coefficients were measured for kernels of sizes '
          f'{list(measured.kernel_sizes)}; this model has '
          f'{list(layout.kernel_sizes)}.')
    compute, base = measured.seconds_per_weight, measured.base_seconds
  return prunefl.TimeModel(
      compute_seconds=tuple(compute),
      bytes_per_weight=float(upload_bytes + 4),
      fixed_bytes=float(dense * (upload_bytes + 4) + mask_bytes),
      bandwidth_bytes=bandwidth_mbps * 1e6,
      overhead_seconds=float(overhead_seconds),
      base_compute_seconds=float(base))


def _num_classes(model: tf.keras.Model) -> int | None:
  """The output width of a classifier (None when the output is not [B, C])."""
  try:
    shape = model.output_shape
  except (AttributeError, ValueError):
    return None
  if isinstance(shape, tuple) and len(shape) == 2 and shape[-1]:
    return int(shape[-1])
  return None


def _initial_pruning_bytes(layout, dense_start, start, upload_dtype
                           ) -> tuple[int, int]:
  """(uplink, downlink) bytes of the initial pruning: the selected client
  receives the dense initial model and sends back its pruned model with the
  mask, as the round payloads (`sparse.codec`) would carry them."""
  down = codec.encode(*layout.split(*dense_start), send_masks=True)
  up = codec.encode(*layout.split(start.trainable, start.non_trainable),
                    send_masks=True, dtype=upload_dtype)
  return int(codec.payload_bytes(up)), int(codec.payload_bytes(down))


def build_prunefl_components(
    model_fn: Callable[[], tf.keras.Model], **kwargs) -> skeleton.Components:
  """The parts `build_weighted_prunefl` composes (for tests and custom loops).

  Takes exactly the keyword arguments of `build_weighted_prunefl`; runs the
  initial pruning.
  """
  a = skeleton.bind_arguments(build_weighted_prunefl,
                              'build_prunefl_components', model_fn, kwargs)
  _check_args(a)
  measured, gflops, overhead = time_options(a)
  upload_tf_dtype = sparse_lib.codec.upload_dtype(a['upload_dtype'])
  client_optimizer, server_optimizer = skeleton.checked_optimizers(
      client_optimizer_fn=a['client_optimizer_fn'],
      server_optimizer_fn=a['server_optimizer_fn'], loss_fn=a['loss_fn'])

  # The selected client's models: the initial model, all weights live.
  plain, wrapped = skeleton.prunable_model(
      model_fn, a['input_spec'], seed=a['seed'],
      initial_weights=a['initial_weights'])
  model = skeleton.learning_model(plain, wrapped, loss_fn=a['loss_fn'],
                                  input_spec=a['input_spec'])
  layout = layout_lib.build_layout(wrapped, 0.0, 'uniform')  # Dense start.
  sizes = sum(layout.kernel_sizes)
  max_live = (None if a['sparsity'] == 0 else
              int(np.floor((1.0 - a['sparsity']) * sizes)))
  dense_start = skeleton.weight_arrays(wrapped)
  times = time_model(layout, upload_bytes=upload_tf_dtype.size,
                     bandwidth_mbps=a['prunefl_bandwidth_mbps'],
                     overhead_seconds=overhead, compute_gflops=gflops,
                     measured=measured)
  start = prunefl_initial_pruning.run(
      wrapped, model, layout, a['initial_client_data'],
      optimizer=client_optimizer, epochs=a['client_epochs'],
      weight_decay=a['client_weight_decay'], time_model=times,
      max_decrease=a['prunefl_max_decrease'], max_live=max_live,
      interval_steps=a['prunefl_initial_interval_steps'],
      max_reconfigurations=a['prunefl_initial_reconfigurations'],
      num_classes=_num_classes(wrapped))
  return skeleton.build_components(
      layout, start.trainable, start.non_trainable,
      client_optimizer=client_optimizer,
      hooks=(hooks.PruneFLImportance(a['rounds_between_readjustments']),),
      initial_bytes=_initial_pruning_bytes(layout, dense_start, start,
                                           upload_tf_dtype),
      aggregator_factory=importance_lib.ImportanceSumFactory(
          layout, norm_bound=a['client_norm_bound']),
      build_finalizer=functools.partial(
          prunefl_finalizer.build_prunefl_finalizer, layout,
          server_optimizer=server_optimizer,
          rule=prunefl_finalizer.PruneFLServerRule(
              interval=a['rounds_between_readjustments'],
              max_decrease=a['prunefl_max_decrease'], time_model=times,
              max_live=max_live,
              dormant_kernels=tuple(start.dormant_kernels))),
      **skeleton.builder_parts(a))

