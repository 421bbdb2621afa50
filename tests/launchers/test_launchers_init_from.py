"""--init_from: a run starts from a trained Keras model; a wrong one is refused."""

import csv

import tensorflow as tf

from launcher_helpers import TRAIN, run_script
from tff_feddst import data, models, program

FLAGS = ['--dataset=digits', '--model=mlp', '--total_clients=10',
         '--clients_per_round=3', '--rounds=1', '--client_epochs=1',
         '--sparsity=0.5', '--eval_every=1', '--seed=0']


def trained_mlp(path, hidden=64):
  """An mlp trained centrally on the digits (test accuracy ~0.9)."""
  digits = data.load_digits()
  model = models.mlp((8, 8, 1), 10, hidden=hidden)
  model.compile('adam', tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True), metrics=['accuracy'])
  model.fit(digits.x_train, digits.y_train, epochs=30, verbose=0)
  model.save(path)
  return model


def first_accuracy(run_dir):
  with open(program.RunPaths.of(run_dir).metrics_csv, newline='') as f:
    return float(next(csv.DictReader(f))['test/accuracy'])


def test_warm_start_beats_scratch_after_one_round(tmp_path):
  tf.keras.utils.set_random_seed(0)
  trained_mlp(tmp_path / 'central.keras')
  warm = run_script(TRAIN, *FLAGS, f'--root_dir={tmp_path / "warm"}',
                    f'--init_from={tmp_path / "central.keras"}')
  assert warm.returncode == 0, warm.stderr[-3000:]
  # From scratch, one round of one epoch on 3 non-IID clients stays near
  # chance (0.1; ~0.2 seen); from the central model it starts near 0.9.
  assert first_accuracy(tmp_path / 'warm') > 0.7
  recorded = program.read_hparams(tmp_path / 'warm')['init_from']
  assert recorded == str(tmp_path / 'central.keras')


def test_a_model_of_another_architecture_is_refused(tmp_path):
  model = models.mlp((8, 8, 1), 10, hidden=32)
  model.save(tmp_path / 'other.keras')
  result = run_script(TRAIN, *FLAGS, f'--root_dir={tmp_path / "run"}',
                      f'--init_from={tmp_path / "other.keras"}')
  assert result.returncode != 0
  assert '--init_from=' in result.stderr
  assert 'fc1/kernel with shape (64, 64) here' in result.stderr
  assert '(64, 32)' in result.stderr
  assert 'Traceback' not in result.stderr
  # A missing file: tests/models/test_warm_start.py (same error path).

