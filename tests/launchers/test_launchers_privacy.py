"""train.py with differential privacy: one tiny run (child process), its ε."""

import math

import dp_accounting
import pytest

from launcher_helpers import TRAIN, read_rows, run_script

DP_FLAGS = [
    '--dataset=digits', '--model=mlp', '--total_clients=10',
    '--clients_per_round=3', '--rounds=2', '--client_epochs=1',
    '--batch_size=16', '--eval_every=2', '--seed=3', '--algorithm=random_mask',
    '--sparsity=0.8', '--dp_noise_multiplier=1.0', '--dp_clip_norm=1.0',
]


def direct_epsilon(q, z, rounds, delta):
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(dp_accounting.PoissonSampledDpEvent(
      q, dp_accounting.GaussianDpEvent(z)), rounds)
  return accountant.get_epsilon(delta)


# ~25 CPU-s of launcher child: `-m slow`. By default the same ε column comes
# from program.train in-process (tests/program/test_program_train_loop.py::
# test_privacy_metrics_only_for_a_dp_process) and the DP flags are checked by
# the registry tests.
@pytest.mark.slow
def test_dp_run_reports_epsilon(tmp_path):
  result = run_script(TRAIN, *DP_FLAGS, f'--root_dir={tmp_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_rows(tmp_path)
  assert [r['round'] for r in rows] == ['1', '2']
  eps = [float(r['privacy/epsilon']) for r in rows]
  # δ defaults to 1 / the 10 clients; q = 3 / 10.
  assert [float(r['privacy/delta']) for r in rows] == [0.1, 0.1]
  for rounds, got in enumerate(eps, start=1):
    assert got == pytest.approx(direct_epsilon(0.3, 1.0, rounds, 0.1),
                                rel=1e-9)
  assert 0 < eps[0] < eps[1] < math.inf
  # The mask is fixed: the density never moves.
  assert len({r['density/total'] for r in rows}) == 1
  assert rows[0]['aggregator/dropped_clients'] == '0'
