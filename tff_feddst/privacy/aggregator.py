"""DP-FedAvg's aggregation: TFF's `DifferentiallyPrivateFactory` on the deltas.

`(<S@SERVER, float32[n]@CLIENTS, float32@CLIENTS> -> <S@SERVER, float32[n]@SERVER, M@SERVER>)`

Each client's delta (`sparse.flat_update`) is clipped to L2 norm C, summed, the sum
gets Gaussian noise of standard deviation z·C, and it is divided by the
*expected* clients per round, not by the clients that came (McMahan et al.,
ICLR 2018: the fixed-denominator estimator, whose sensitivity does not depend
on who took part). All of this is TFF's `gaussian_fixed` (or, for adaptive
clipping, `gaussian_adaptive`: Andrew et al. 2021, the clip follows a
privately estimated quantile of the update norms). The mean is unweighted:
example counts would make a client's influence depend on its data size, so
the weights are ignored.

Before clipping, a delta holding a NaN/Inf or whose norm exceeds
`norm_bound` is replaced by zeros and counted in `dropped_clients`: clipping
does not catch a NaN (its norm compares False) and TFF's `zeroing_factory`
neither, and one NaN would poison the noisy sum. Zeroing a delta does not
raise the query's sensitivity. The count itself is released without noise,
like the clients' training metrics (see docs/production.md, Differential
privacy).
"""

from __future__ import annotations

import collections
import dataclasses

import tensorflow as tf
import tensorflow_federated as tff


@dataclasses.dataclass(frozen=True)
class DPConfig:
  """Gaussian DP on the deltas: fixed clip `clip_norm` or adaptive clipping.

  Attributes:
    noise_multiplier: z; noise stddev z·C on the sum (0: clipping only).
      With adaptive clipping the effective total multiplier (TFF's meaning).
    clients_per_round: the fixed denominator of the mean.
    clip_norm: C, fixed clipping; None with `adaptive_quantile`.
    adaptive_quantile: the share of updates the adaptive clip should leave
      unclipped (TFF's `target_unclipped_quantile`); None with `clip_norm`.
  """
  noise_multiplier: float
  clients_per_round: int
  clip_norm: float | None = None
  adaptive_quantile: float | None = None

  def __post_init__(self):
    z, m = self.noise_multiplier, self.clients_per_round
    checks = [
        (z >= 0, 'dp_noise_multiplier', '>= 0', z),
        (m >= 1, 'dp_clients_per_round', '>= 1', m),
        ((self.clip_norm is None) != (self.adaptive_quantile is None),
         'dp_clip_norm', 'set (fixed clipping) or dp_adaptive_quantile set '
         '(adaptive clipping), exactly one of them', self.clip_norm),
        (self.clip_norm is None or self.clip_norm > 0, 'dp_clip_norm', '> 0',
         self.clip_norm),
        (self.adaptive_quantile is None or 0 < self.adaptive_quantile < 1,
         'dp_adaptive_quantile', 'in (0, 1)', self.adaptive_quantile),
        # TFF's own limit: the clipped-count noise (0.05 m) must be able to
        # absorb its share of the budget.
        (self.adaptive_quantile is None or z < 0.1 * m,
         'dp_noise_multiplier', f'< 0.1 x clients per round = {0.1 * m:g} '
         'with adaptive clipping (the clip estimate needs its share of the '
         'privacy budget; use more clients per round or a fixed '
         'dp_clip_norm)', z),
    ]
    for ok, name, expected, value in checks:
      if not ok:
        raise ValueError(f'{name} must be {expected}, got {value!r}.')

  def factory(self) -> tff.aggregators.UnweightedAggregationFactory:
    z, m = float(self.noise_multiplier), float(self.clients_per_round)
    dp = tff.aggregators.DifferentiallyPrivateFactory
    if self.clip_norm is not None:
      return dp.gaussian_fixed(z, m, float(self.clip_norm))
    return dp.gaussian_adaptive(
        z, m, target_unclipped_quantile=float(self.adaptive_quantile))


def screen(delta, norm_bound: float):
  """(delta, or zeros if it holds a NaN/Inf or its norm exceeds the bound;
  1 if it was replaced)."""
  finite = tf.reduce_all(tf.math.is_finite(delta))
  norm = tf.norm(tf.where(tf.math.is_finite(delta), delta, 0.0))
  usable = tf.logical_and(finite, norm <= norm_bound)
  return (tf.where(usable, delta, tf.zeros_like(delta)),
          1 - tf.cast(usable, tf.int32))


class DPMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Weighted in type (for `compose_learning_process`), unweighted in effect."""

  def __init__(self, config: DPConfig, *, norm_bound: float = 1e6):
    self._config = config
    self._norm_bound = float(norm_bound)

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    inner = self._config.factory().create(value_type)
    norm_bound = self._norm_bound

    @tff.tensorflow.computation(value_type)
    def screen_fn(delta):
      return screen(delta, norm_bound)

    @tff.federated_computation(
        inner.state_type, tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      del weight  # DP-FedAvg's mean is unweighted.
      screened, dropped = tff.federated_map(screen_fn, value)
      out = inner.next(state, screened)
      measurements = tff.federated_zip(collections.OrderedDict(
          dropped_clients=tff.federated_sum(dropped), dp=out.measurements))
      return tff.templates.MeasuredProcessOutput(out.state, out.result,
                                                 measurements)

    return tff.templates.AggregationProcess(inner.initialize, next_fn)
