"""PruneFL's mask reconfiguration (Jiang et al., IEEE TNNLS 2022), in numpy.

PruneFL picks the mask that maximises the approximate empirical-risk
reduction per unit of round time:

    R(M) = (S0 + Σ_{j∈M} s_j) / (c + Σ_{j∈M} t_l(j))

s_j ≥ 0 is a weight's importance (aggregated squared gradients: one SGD step
along g lowers the loss by ≈ η Σ g_j², so a weight's share is g_j²), t_l > 0
the time one live weight of layer l adds to a round (computation and
communication, linear in the live count), c the round's fixed time, S0 the
importance of what is always present (dense parameters).

The search keeps a protected core — in each layer the live weights whose
magnitude is not among the smallest `max_decrease` share — and adds
candidates (the rest, live or not) in decreasing order of s_j / t_l while
that ratio exceeds the current R. Adding an element raises a ratio exactly
when its own ratio is above it, so this greedy order maximises R over all
masks containing the core (the authors' `architecture_search` uses a heap
for the same order; we sort once). `max_live` caps the live count (PruneFL's
optional density limit; we use it to compare at a target sparsity): as in the
authors' code the greedy then stops at the cap, which keeps the best-ratio
candidates but is not the exact maximum of R under a cardinality limit.

The same module holds the rest of PruneFL's arithmetic that needs no
TensorFlow: when a reconfiguration happens (`is_reconfiguration_round`; in
the initial pruning `is_initial_reconfiguration_step`), the round-time model
that gives t_l and c (`TimeModel`, with measured per-layer compute
seconds, `MeasuredCompute`, or FLOP-derived ones), and when the initial
pruning on one client has settled (`initial_pruning_settled`). The server's
copy of `reconfigure` in TensorFlow (TFF runs graphs, not Python) is
`sparsity.prunefl_tf`, tested equal to this one.

Pure numpy (no TensorFlow), so the rule is tested against brute force.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import json
import math

import numpy as np

# The authors' code (jiangyuang/PruneFL, configs/*.py): δ = MAX_DEC_DIFF,
# and initial pruning stops once the density moved by at most IP_THR for
# five reconfigurations in a row; it starts reconfiguring once the selected
# client's training accuracy reaches ADJ_THR_FACTOR / classes.
DEFAULT_MAX_DECREASE = 0.3
SETTLED_CHANGE = 0.1
SETTLED_COUNT = 5
START_ACCURACY_FACTOR = 1.5
# The initial pruning in local steps (`initial_pruning`): a round is one step
# on each of IP_DATA_BATCH = 10 stored batches, the accuracy is checked every
# EVAL_DISP_INTERVAL = 10 rounds, and the rule runs every IP_ADJ_INTERVAL =
# 50 rounds (500 steps) for at most IP_MAX_ROUNDS = 1000 rounds (20 times).
INITIAL_ROUND_STEPS = 10
INITIAL_CHECK_STEPS = 100
DEFAULT_INITIAL_INTERVAL_STEPS = 500
DEFAULT_INITIAL_RECONFIGURATIONS = 20


def protected_core(weights: np.ndarray, mask: np.ndarray,
                   max_decrease: float) -> np.ndarray:
  """The live weights PruneFL never drops in this reconfiguration.

  Of a layer's q = |live| live weights, the floor(max_decrease · q) smallest
  |w| may go; the core is every live weight at least as large as the
  (floor(max_decrease · q) + 1)-th smallest live magnitude.
  """
  if not 0.0 <= max_decrease < 1.0:
    raise ValueError(f'max_decrease must be in [0, 1), got {max_decrease!r}.')
  mask = np.asarray(mask, bool)
  live = np.abs(np.asarray(weights))[mask]
  if live.size == 0:
    return np.zeros_like(mask)
  threshold = np.sort(live)[int(max_decrease * live.size)]
  return mask & (np.abs(weights) >= threshold)


def reconfigure(weights: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                importance: Sequence[np.ndarray],
                time_per_weight: Sequence[float], *, base_time: float,
                max_decrease: float, base_importance: float = 0.0,
                max_live: int | None = None) -> list[np.ndarray]:
  """PruneFL's next masks (one bool array per prunable kernel).

  Args:
    weights: the server's kernels (magnitudes choose the protected core).
    masks: their current masks.
    importance: s_j ≥ 0 per weight, same shapes.
    time_per_weight: t_l > 0 per kernel.
    base_time: c > 0, the round time that does not depend on the mask.
    max_decrease: the share of each layer's live weights that may leave.
    base_importance: S0 ≥ 0.
    max_live: at most this many live weights in all (None: no cap); the core
      is always kept, even when it alone exceeds the cap.

  Returns:
    The masks that maximise R over masks containing the core (under the cap).
  """
  if not (len(weights) == len(masks) == len(importance) ==
          len(time_per_weight)):
    raise ValueError('weights, masks, importance and time_per_weight need '
                     'one entry per kernel.')
  if base_time <= 0 or any(t <= 0 for t in time_per_weight):
    raise ValueError('base_time and every time_per_weight must be > 0.')
  if any(np.any(np.asarray(s) < 0) for s in importance):
    raise ValueError('importance must be >= 0.')
  cores = [protected_core(w, m, max_decrease)
           for w, m in zip(weights, masks)]
  numerator = base_importance + sum(float(np.sum(np.asarray(s)[k]))
                                    for s, k in zip(importance, cores))
  denominator = base_time + sum(t * int(k.sum())
                                for t, k in zip(time_per_weight, cores))
  # Candidates of every layer, flattened: (ratio, importance, time, layer, i).
  layer_ids, flat_ids, gains, costs = [], [], [], []
  for layer, (s, k, t) in enumerate(zip(importance, cores, time_per_weight)):
    candidates = np.flatnonzero(~k.ravel())
    layer_ids.append(np.full(candidates.size, layer))
    flat_ids.append(candidates)
    gains.append(np.asarray(s, np.float64).ravel()[candidates])
    costs.append(np.full(candidates.size, float(t)))
  layer_ids, flat_ids, gains, costs = (np.concatenate(a) for a in (
      layer_ids, flat_ids, gains, costs))
  # Best ratio first; ties by layer then index (np.lexsort: last key first).
  order = np.lexsort((flat_ids, layer_ids, -gains / costs))
  gains, costs = gains[order], costs[order]
  before_num = numerator + np.concatenate([[0.0], np.cumsum(gains)[:-1]])
  before_den = denominator + np.concatenate([[0.0], np.cumsum(costs)[:-1]])
  # Element k joins iff its ratio beats R of the first k: the first failure
  # stops the search (every later ratio is no larger, R no smaller).
  improves = gains * before_den > before_num * costs
  taken = int(np.argmin(improves)) if not improves.all() else improves.size
  if max_live is not None:
    core_live = sum(int(k.sum()) for k in cores)
    taken = min(taken, max(0, max_live - core_live))
  new = [k.copy().ravel() for k in cores]
  for layer, i in zip(layer_ids[order][:taken], flat_ids[order][:taken]):
    new[layer][i] = True
  return [n.reshape(np.shape(m)) for n, m in zip(new, masks)]


def objective(masks: Sequence[np.ndarray], importance: Sequence[np.ndarray],
              time_per_weight: Sequence[float], *, base_time: float,
              base_importance: float = 0.0) -> float:
  """R(M), the ratio `reconfigure` maximises."""
  gain = base_importance + sum(
      float(np.sum(np.ravel(s)[np.ravel(m).astype(bool)]))
      for s, m in zip(importance, masks))
  cost = base_time + sum(t * int(np.sum(m))
                         for t, m in zip(time_per_weight, masks))
  return gain / cost


def is_reconfiguration_round(round_num: int, interval: int) -> bool:
  """Whether round `round_num` (from 0) of federated training reconfigures.

  As the authors' `check_adj_round`: the first reconfiguration comes after
  `interval` rounds of training, then every `interval` rounds: r = R_adj,
  2 R_adj, ... The clients of that round upload their importance.
  """
  return round_num >= interval and round_num % interval == 0


def initial_pruning_settled(densities: Sequence[float], *,
                            change: float = SETTLED_CHANGE,
                            count: int = SETTLED_COUNT) -> bool:
  """Whether the initial pruning stops: the density after each of the last
  `count` reconfigurations moved by at most `change` (relative) from the one
  before (the authors' `initial_pruning`: |d_i / d_{i-1} - 1| <= IP_THR)."""
  if len(densities) < count + 1:
    return False
  tail = densities[-(count + 1):]
  return all(abs(b / a - 1.0) <= change for a, b in zip(tail, tail[1:]))


def is_initial_reconfiguration_step(step: int, started: int | None,
                                    interval: int) -> bool:
  """Whether the initial pruning reconfigures after local step `step` (from
  1), the accuracy threshold having been seen after `started` steps (None:
  not yet).

  As the authors' `initial_pruning`, in steps: the first reconfiguration
  ends the round (INITIAL_ROUND_STEPS steps) that starts with the passing
  check, then one every `interval` steps (theirs: IP_ADJ_INTERVAL = 50
  rounds of 10 steps).
  """
  if started is None:
    return False
  since = step - started - INITIAL_ROUND_STEPS
  return since >= 0 and since % interval == 0


def next_initial_event(step: int, started: int | None, interval: int) -> int:
  """The step after which the initial pruning next acts: the next accuracy
  check (not started) or the next reconfiguration (started)."""
  if started is None:
    return (step // INITIAL_CHECK_STEPS + 1) * INITIAL_CHECK_STEPS
  first = started + INITIAL_ROUND_STEPS
  if step < first:
    return first
  return first + ((step - first) // interval + 1) * interval


@dataclasses.dataclass(frozen=True)
class TimeModel:
  """The time of one FL round on a client: c + Σ_l t_l · live_l, with

      t_l = n · compute_l + bytes_per_weight / bandwidth
      c   = overhead + fixed_bytes / bandwidth + n · base_compute

  n: the examples a client processes in the round. compute_l: the seconds
  one live weight of kernel l adds per example processed, the analogue of
  the authors' per-layer `COMP_COEFFICIENTS_SINGLE` (seconds per weight per
  local step of 20 examples on their device; a round has E steps, and the
  first convolution costs 0 in three of their four configs). base_compute:
  the seconds per example no mask changes (their `TIME_CONSTANT` = E ·
  `SPARSE_TIME`, the step time of the pruned model). bytes_per_weight: b_up
  + b_down, one live value up (the upload dtype) and down (float32), as
  their `COMM_COEFFICIENT` counts both ways; fixed_bytes: what every round
  sends whatever the mask (dense params both ways, the packed mask down).

  compute_l comes from `algorithms.prunefl`: measured on this machine
  (`MeasuredCompute`, `benchmarks/prunefl_time_coefficients.py`), or 'flops'
  (`flop_compute_seconds`).
  """
  compute_seconds: tuple[float, ...]
  bytes_per_weight: float
  fixed_bytes: float
  bandwidth_bytes: float
  overhead_seconds: float
  base_compute_seconds: float = 0.0

  def layer_times(self, examples) -> list:
    """t_l for a round of `examples` examples (a number or a scalar tensor)."""
    comm = self.bytes_per_weight / self.bandwidth_bytes
    return [c * examples + comm for c in self.compute_seconds]

  def base_time(self, examples):
    """c, seconds, for a round of `examples` examples."""
    return (self.overhead_seconds + self.fixed_bytes / self.bandwidth_bytes +
            self.base_compute_seconds * examples)

  def round_time(self, live_counts: Sequence[int], examples):
    """The modelled seconds of a round with these live counts."""
    return self.base_time(examples) + sum(
        t * n for t, n in zip(self.layer_times(examples), live_counts))


def flop_compute_seconds(output_positions: Sequence[int],
                         compute_flops: float) -> tuple[float, ...]:
  """The 'flops' time model: compute_l = 6 · P_l / compute_flops.

  6 · P_l: training FLOPs per live weight per example (forward multiply-add
  = 2 FLOPs at each of the P_l output positions the kernel is applied at,
  backward twice that; the `round/client_flops` count); compute_flops: the
  client's training rate, FLOP/s. Its base compute is 0.
  """
  return tuple(6.0 * p / compute_flops for p in output_positions)


_MEASURED_KEYS = ('kernel_sizes', 'seconds_per_weight_per_example',
                  'base_seconds_per_example')


@dataclasses.dataclass(frozen=True)
class MeasuredCompute:
  """Per-kernel compute seconds measured on a machine: what
  `benchmarks/prunefl_time_coefficients.py` writes (its other keys describe
  the measurement).

  Attributes:
    kernel_sizes: the weights of each prunable kernel measured (a model
      check: they must equal the layout's).
    seconds_per_weight: compute_l, per live weight per example.
    base_seconds: the mask-independent seconds per example.
  """
  kernel_sizes: tuple[int, ...]
  seconds_per_weight: tuple[float, ...]
  base_seconds: float

  def to_text(self) -> str:
    """Canonical JSON of the numbers (what hparams.json records)."""
    return json.dumps(dict(zip(_MEASURED_KEYS, (
        list(self.kernel_sizes), list(self.seconds_per_weight),
        self.base_seconds))), sort_keys=True, separators=(',', ':'))


def load_measured_compute(value) -> MeasuredCompute:
  """A `MeasuredCompute` from a mapping, JSON text ('{...}') or a JSON file's
  path; ValueError saying what is wrong."""
  if isinstance(value, MeasuredCompute):
    return value
  where = 'the measured coefficients'
  if isinstance(value, str):
    if value.lstrip().startswith('{'):
      text = value
    else:
      where = value
      try:
        with open(value, encoding='utf-8') as f:
          text = f.read()
      except OSError as e:
        raise ValueError(f'cannot read {value}: {e.strerror or e}') from None
    try:
      value = json.loads(text)
    except ValueError as e:
      raise ValueError(f'{where} is not JSON: {e}') from None
  if not isinstance(value, Mapping):
    raise ValueError(f'{where} must be a JSON object.')
  missing = [k for k in _MEASURED_KEYS if k not in value]
  if missing:
    raise ValueError(f'{where}: missing {", ".join(missing)} (written by '
                     'benchmarks/prunefl_time_coefficients.py).')
  sizes, seconds, base = (value[k] for k in _MEASURED_KEYS)

  def number(x):
    return (isinstance(x, (int, float)) and not isinstance(x, bool) and
            math.isfinite(x) and x >= 0)

  if not (isinstance(sizes, list) and isinstance(seconds, list) and
          sizes and len(sizes) == len(seconds)):
    raise ValueError(f'{where}: kernel_sizes and seconds_per_weight_per_'
                     'example must be lists of one entry per kernel.')
  if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
             for n in sizes):
    raise ValueError(f'{where}: kernel_sizes must be integers > 0.')
  if not (all(number(x) for x in seconds) and number(base)):
    raise ValueError(f'{where}: the seconds must be finite numbers >= 0.')
  return MeasuredCompute(tuple(sizes), tuple(float(x) for x in seconds),
                         float(base))
