"""train.py --algorithm=prunefl: a tiny run, and the same run resumed from
its round-1 checkpoint (child processes), equal to it; the flags' refusals
(in-process). The cut-back pattern is test_launchers_sparsyfed.py's."""

import shutil

from absl import flags
import numpy as np
import pytest

from launcher_helpers import TRAIN, read_rows, run_script, without_wall_clock
from test_launchers_sparsyfed import cut_back_to_round
from tff_feddst import program

PRUNEFL_FLAGS = [
    '--dataset=digits', '--model=mlp', '--total_clients=10',
    '--clients_per_round=3', '--rounds=3', '--client_epochs=1',
    '--batch_size=16', '--client_learning_rate=0.05', '--sparsity=0.7',
    '--rounds_between_readjustments=1', '--prunefl_initial_interval_steps=20',
    '--prunefl_initial_reconfigurations=10',
    '--eval_every=1', '--checkpoint_every=1', '--seed=3',
    '--algorithm=prunefl',
]


@pytest.mark.slow  # Two launcher runs, as the other field methods'.
def test_prunefl_run_resumes_exactly(tmp_path):
  full_dir, resumed_dir = tmp_path / 'full', tmp_path / 'resumed'
  full = run_script(TRAIN, *PRUNEFL_FLAGS, f'--root_dir={full_dir}')
  assert full.returncode == 0, full.stderr[-3000:]
  shutil.copytree(full_dir, resumed_dir)
  cut_back_to_round(resumed_dir, 1)
  resumed = run_script(TRAIN, *PRUNEFL_FLAGS, f'--root_dir={resumed_dir}')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'round 2/3' in resumed.stderr and 'round 1/3' not in resumed.stderr
  full_rows = read_rows(full_dir)
  assert without_wall_clock(read_rows(resumed_dir)) == without_wall_clock(
      full_rows)
  # Rounds 2 and 3 reconfigure (R_adj = 1); every round's 3 clients upload
  # their importance, 4 bytes per kernel weight of the MLP (64·64 + 64·10).
  assert [r['finalizer/reconfigured'] for r in full_rows] == ['0', '1', '1']
  uplink = [int(r['round/uplink_bytes']) for r in full_rows]
  assert all(u > 3 * (4 * (64 * 64 + 64 * 10) + 4) for u in uplink)
  assert [r['finalizer/importance_client_rounds'] for r in full_rows] == [
      '3', '6', '3']
  assert all(float(r['density/total']) <= 0.3 + 1e-6 for r in full_rows)
  full_weights, _ = program.load_model_weights(full_dir)
  resumed_weights, _ = program.load_model_weights(resumed_dir)
  for a, b in zip(full_weights.trainable + full_weights.non_trainable,
                  resumed_weights.trainable + resumed_weights.non_trainable):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('argv,message', [
    (['--algorithm=prunefl', '--prunefl_max_decrease=1'],
     '--prunefl_max_decrease must be in [0, 1), got 1.0'),
    (['--algorithm=prunefl', '--prunefl_bandwidth_mbps=0'],
     '--prunefl_bandwidth_mbps must be > 0, got 0.0'),
    (['--algorithm=prunefl', '--prunefl_initial_interval_steps=0'],
     '--prunefl_initial_interval_steps must be >= 1, got 0'),
    (['--algorithm=prunefl', '--prunefl_time_coefficients=/nonexistent.json'],
     '--prunefl_time_coefficients must be flops or measured coefficients '
     '(the JSON file benchmarks/prunefl_time_coefficients.py writes): '
     'cannot read /nonexistent.json'),
    (['--algorithm=feddst', '--prunefl_round_overhead=2'],
     '--prunefl_round_overhead applies only to --algorithm prunefl'),
    (['--algorithm=prunefl', '--client_density_budgets=0.1:1'],
     '--client_density_budgets applies only to'),
    (['--algorithm=prunefl', '--dp_noise_multiplier=1', '--dp_clip_norm=1'],
     '--dp_noise_multiplier cannot be used with --algorithm=prunefl'),
])
def test_prunefl_flags_refused_naming_the_flag(parse, argv, message):
  with pytest.raises(flags.IllegalFlagValueError) as e:
    parse(*argv)
  assert message in str(e.value)


def test_prunefl_flags_resolve(parse):
  hp = parse('--algorithm=prunefl').resolve_hparams()
  assert (hp['sparsity'], hp['prunefl_max_decrease'],
          hp['prunefl_compute_gflops'], hp['readjustment_ratio']) == (
              0.0, 0.3, 14.4, 0.0)
