"""privacy.accounting against dp_accounting directly and known properties."""

import math

import dp_accounting
import pytest

from tff_feddst.privacy import accounting


def direct_epsilon(q, z, rounds, delta):
  accountant = dp_accounting.rdp.RdpAccountant()
  for _ in range(rounds):  # Round by round, not as one self-composed event.
    accountant.compose(dp_accounting.PoissonSampledDpEvent(
        q, dp_accounting.GaussianDpEvent(z)))
  return accountant.get_epsilon(delta)


@pytest.mark.parametrize('q,z,rounds,delta', [
    (0.25, 1.0, 2, 0.05), (0.05, 1.1, 150, 1 / 400), (1.0, 5.0, 3, 1e-5)])
def test_epsilon_equals_dp_accounting(q, z, rounds, delta):
  got = accounting.epsilon(noise_multiplier=z, sampling_rate=q, rounds=rounds,
                           delta=delta)
  assert got == pytest.approx(direct_epsilon(q, z, rounds, delta), rel=1e-9)
  assert 0 < got < math.inf


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
  eps = [accounting.epsilon(noise_multiplier=1.0, sampling_rate=0.1,
                            rounds=r, delta=1e-3) for r in (1, 10, 100)]
  assert eps[0] < eps[1] < eps[2]
  more_noise = accounting.epsilon(noise_multiplier=2.0, sampling_rate=0.1,
                                  rounds=100, delta=1e-3)
  assert more_noise < eps[2]


def test_no_rounds_no_noise_and_bad_values():
  assert accounting.epsilon(noise_multiplier=1.0, sampling_rate=0.1,
                            rounds=0, delta=1e-3) == 0.0
  assert accounting.epsilon(noise_multiplier=0.0, sampling_rate=0.1,
                            rounds=1, delta=1e-3) == math.inf
  for kwargs, name in ((dict(noise_multiplier=-1.0), 'noise_multiplier'),
                       (dict(delta=1.0), 'delta'),
                       (dict(sampling_rate=0.0), 'sampling_rate')):
    args = dict(noise_multiplier=1.0, sampling_rate=0.1, rounds=1, delta=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
      accounting.epsilon(**args)
  assert accounting.default_delta(400) == 1 / 400
  assert accounting.sampling_rate(20, 400) == 0.05
  with pytest.raises(ValueError, match='clients_per_round'):
    accounting.sampling_rate(21, 20)

