"""ε of DP-FedAvg after r rounds, from `dp_accounting` (no TensorFlow).

Each round samples clients at rate q = clients_per_round / total clients and
adds Gaussian noise of multiplier z to their clipped sum: a Poisson-sampled
Gaussian mechanism, composed over rounds with the RDP accountant (Mironov
2017; Mironov, Talwar, Zhang 2019), as DP-FedAvg (McMahan et al., ICLR 2018)
and TFF's DP tutorials account. Our sampler draws exactly clients_per_round
clients without replacement; accounting it as Poisson sampling at the same
rate is the standard approximation and is what this module reports.

With adaptive clipping (Andrew et al. 2021) z is the *effective* total noise
multiplier: TFF's `gaussian_adaptive` raises the noise on the update so that
the update and the noisy clipped-count estimate together cost what a single
Gaussian mechanism of multiplier z costs; the same z is accounted here.
"""

from __future__ import annotations

import math

import dp_accounting


def default_delta(num_clients: int) -> float:
  """δ = 1 / n, for a federation of n clients (the usual choice, δ ≤ 1/n)."""
  if num_clients < 1:
    raise ValueError(f'num_clients must be >= 1, got {num_clients}.')
  return 1.0 / num_clients


def sampling_rate(clients_per_round: int, num_clients: int) -> float:
  if not 1 <= clients_per_round <= num_clients:
    raise ValueError(f'clients_per_round must be in [1, num_clients='
                     f'{num_clients}], got {clients_per_round}.')
  return clients_per_round / num_clients


def epsilon(*, noise_multiplier: float, sampling_rate: float, rounds: int,
            delta: float) -> float:
  """ε after `rounds` rounds at `delta`; inf without noise, 0 before round 1."""
  # pylint: disable=redefined-outer-name
  if noise_multiplier < 0:
    raise ValueError(f'noise_multiplier must be >= 0, got {noise_multiplier}.')
  if not 0.0 < sampling_rate <= 1.0:
    raise ValueError(f'sampling_rate must be in (0, 1], got {sampling_rate}.')
  if not 0.0 < delta < 1.0:
    raise ValueError(f'delta must be in (0, 1), got {delta}.')
  if rounds < 0:
    raise ValueError(f'rounds must be >= 0, got {rounds}.')
  if rounds == 0:
    return 0.0
  if noise_multiplier == 0:
    return math.inf  # Clipping alone bounds sensitivity, not privacy.
  event = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)),
      rounds)
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(event)
  return float(accountant.get_epsilon(delta))
