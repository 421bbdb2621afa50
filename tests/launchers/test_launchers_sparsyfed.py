"""train.py --algorithm=sparsyfed: a tiny run, and the same run resumed from
its round-1 checkpoint (child processes), equal to it; the flag's refusals
(in-process).

The resumed run starts from a copy of the finished run's directory cut back
to what a crash right after the round-1 checkpoint leaves (that checkpoint,
the CSV rows up to round 1; `program.train_loop`'s documented crash model),
not from a SIGKILLed third child as in test_launchers_train.py: one child
process less (~1/3 of this test's time); the kill itself is tested there.
"""

import csv
import shutil

from absl import flags
import numpy as np
import pytest

from launcher_helpers import TRAIN, read_rows, run_script, without_wall_clock
from tff_feddst import program

SPARSYFED_FLAGS = [
    '--dataset=digits', '--model=mlp', '--total_clients=10',
    '--clients_per_round=3', '--rounds=3', '--client_epochs=1',
    '--batch_size=16', '--client_learning_rate=0.05', '--sparsity=0.8',
    '--sparsyfed_beta=1.5', '--eval_every=1', '--checkpoint_every=1',
    '--seed=3', '--algorithm=sparsyfed',
]


def cut_back_to_round(run_dir, round_num):
  """`run_dir` as a crash right after the checkpoint of `round_num` leaves it."""
  paths = program.RunPaths.of(run_dir)
  for checkpoint in paths.checkpoints.glob('program_state_*'):
    if int(checkpoint.name.rsplit('_', 1)[1]) > round_num:
      shutil.rmtree(checkpoint)
  paths.model_weights.unlink()  # Saved again at the next checkpoint.
  with open(paths.metrics_csv, newline='') as f:
    reader = csv.DictReader(f)
    fields, rows = reader.fieldnames, list(reader)
  with open(paths.metrics_csv, 'w', newline='') as f:
    writer = csv.DictWriter(f, fields)
    writer.writeheader()
    writer.writerows(r for r in rows if int(r['round']) <= round_num)


@pytest.mark.slow  # Two launcher runs (~70 s); see test_launchers_flash.py.
def test_sparsyfed_run_resumes_exactly(tmp_path):
  full_dir, resumed_dir = tmp_path / 'full', tmp_path / 'resumed'
  full = run_script(TRAIN, *SPARSYFED_FLAGS, f'--root_dir={full_dir}')
  assert full.returncode == 0, full.stderr[-3000:]
  shutil.copytree(full_dir, resumed_dir)
  cut_back_to_round(resumed_dir, 1)
  assert [r['round'] for r in read_rows(resumed_dir)] == ['1']
  resumed = run_script(TRAIN, *SPARSYFED_FLAGS, f'--root_dir={resumed_dir}')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'after round 1' in resumed.stderr and 'round 2/3' in resumed.stderr
  assert 'round 1/3' not in resumed.stderr

  full_rows = read_rows(full_dir)
  assert without_wall_clock(read_rows(resumed_dir)) == without_wall_clock(
      full_rows)
  assert program.read_hparams(full_dir)['sparsyfed_beta'] == 1.5
  # Clients upload 1 - S of the kernels; the round-1 downlink is the dense
  # init and later ones are the union of the client masks, which shrinks.
  downlink = [float(r['round/downlink_density']) for r in full_rows]
  assert downlink[0] == 1.0 and 0.2 <= downlink[2] <= downlink[1] < 1.0
  assert all(float(r['round/client_density_mean']) == pytest.approx(0.2,
                                                                   abs=1e-3)
             for r in full_rows)
  full_weights, full_round = program.load_model_weights(full_dir)
  resumed_weights, resumed_round = program.load_model_weights(resumed_dir)
  assert full_round == resumed_round == 3
  for a, b in zip(full_weights.trainable + full_weights.non_trainable,
                  resumed_weights.trainable + resumed_weights.non_trainable):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('argv,message', [
    (['--algorithm=sparsyfed', '--sparsyfed_beta=0.5'],
     '--sparsyfed_beta must be >= 1, got 0.5'),
    (['--algorithm=feddst', '--sparsyfed_beta=2'],
     '--sparsyfed_beta applies only to --algorithm sparsyfed'),
    (['--algorithm=sparsyfed', '--readjustment_ratio=0.1'],
     '--readjustment_ratio applies only to'),
    (['--algorithm=sparsyfed', '--dp_noise_multiplier=1', '--dp_clip_norm=1'],
     '--dp_noise_multiplier cannot be used with --algorithm=sparsyfed'),
])
def test_sparsyfed_flags_refused_naming_the_flag(parse, argv, message):
  with pytest.raises(flags.IllegalFlagValueError) as e:
    parse(*argv)
  assert message in str(e.value)


def test_sparsyfed_flags_resolve(parse):
  hp = parse('--algorithm=sparsyfed').resolve_hparams()
  assert (hp['sparsyfed_beta'], hp['sparsity'], hp['readjustment_ratio']) == (
      1.25, 0.8, 0.0)
