"""The launchers' --help and flag refusals answer without importing TensorFlow.

Each launcher runs as a child whose PYTHONPATH puts first a `tensorflow`
package that raises on import: the answer must come anyway, so it cannot
have waited ~10 s for TensorFlow. (Timings belong in benchmarks, not here.)
"""

import os
import signal
from pathlib import Path
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHERS = REPO / 'launchers'
TRAIN = LAUNCHERS / 'train.py'
EXPORT = LAUNCHERS / 'export.py'
WRITE_TFRECORDS = LAUNCHERS / 'write_tfrecords.py'
PLOT = LAUNCHERS / 'plot.py'
BLOCKED = 'tensorflow imported'


@pytest.fixture(scope='module')
def no_tf_env(tmp_path_factory):
  """An environment in which `import tensorflow` fails loudly."""
  fake = tmp_path_factory.mktemp('no_tf')
  for package in ('tensorflow', 'tensorflow_federated'):
    (fake / package).mkdir()
    (fake / package / '__init__.py').write_text(
        f'raise ImportError({BLOCKED!r})\n')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  env['PYTHONPATH'] = os.pathsep.join(
      [str(fake), *filter(None, [os.environ.get('PYTHONPATH')])])
  return env


def run(env, script, *args):
  return subprocess.run([sys.executable, str(script), *map(str, args)],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=60, check=False)


def test_the_fake_tensorflow_is_the_one_imported(no_tf_env):
  """Else the tests below would pass with TensorFlow imported."""
  result = subprocess.run(
      [sys.executable, '-c', 'import tensorflow'], cwd=REPO, env=no_tf_env,
      capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode != 0 and BLOCKED in result.stderr


def test_train_help(no_tf_env):
  result = run(no_tf_env, TRAIN, '--help')
  assert result.returncode == 1, result.stderr[-3000:]  # absl's --help code.
  assert '--client_epochs' in result.stdout
  assert '--sparsity' in result.stdout
  assert BLOCKED not in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.parametrize('args,message', [
    (['--epochs=3'], 'Did you mean --client_epochs?'),
    (['--sparsity=1.5'], '--sparsity must be in [0, 1), got 1.5.'),
    (['--clients_per_round=0'], '0 is not a positive integer'),
    (['--clients_per_round=30'], '--clients_per_round=30 exceeds'),
    (['--model=resnet'], 'value should be one of'),
    (['--algorithm=fedavg', '--sparsity=0.5'], 'fedavg does not take it'),
    (['--dataset=tfrecord'], '--dataset=tfrecord needs --data_dir'),
    (['extra'], 'Unexpected arguments: extra'),
])
def test_train_refuses_a_bad_command_line(no_tf_env, tmp_path, args, message):
  result = run(no_tf_env, TRAIN, *args, f'--root_dir={tmp_path / "run"}')
  assert result.returncode == 1, result.stderr[-3000:]
  assert message in result.stderr
  assert BLOCKED not in result.stderr and 'Traceback' not in result.stderr
  assert not (tmp_path / 'run').exists()


def test_missing_data_is_refused_before_tensorflow_naming_paths_tried(
    no_tf_env, tmp_path):
  home = tmp_path / 'home'
  home.mkdir()
  env = dict(no_tf_env, HOME=str(home))
  env.pop('KERAS_HOME', None)
  result = run(env, TRAIN, '--dataset=mnist', '--data_dir=/nonexistent/mnist',
               f'--root_dir={tmp_path / "run"}')
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'train.py: error: MNIST not found. Paths tried:' in result.stderr
  assert '/nonexistent/mnist  (no such directory)' in result.stderr
  assert f'{home / ".keras" / "datasets"}  (no such directory)' in (
      result.stderr)
  assert BLOCKED not in result.stderr and 'Traceback' not in result.stderr
  assert not (tmp_path / 'run').exists()  # Nothing written.


@pytest.mark.parametrize('dataset,layout,message', [
    ('emnist', {}, 'Federated EMNIST not found. Path tried:'),
    ('tfrecord', {}, 'feature_spec.json: no such file'),
    ('tfrecord', {'feature_spec.json': '{}'}, 'no client data. Paths tried:'),
    ('tfrecord', {'feature_spec.json': '{}', 'train/': None,
                  'train-0.tfrecord': ''}, 'keep one layout'),
])
def test_federated_data_on_disk_is_checked_before_tensorflow(
    no_tf_env, tmp_path, dataset, layout, message):
  data_dir = tmp_path / 'data'
  data_dir.mkdir()
  for name, text in layout.items():
    if name.endswith('/'):
      (data_dir / name).mkdir()
    else:
      (data_dir / name).write_text(text)
  result = run(no_tf_env, TRAIN, f'--dataset={dataset}', '--model=mlp',
               f'--data_dir={data_dir}', f'--root_dir={tmp_path / "run"}')
  assert result.returncode == 1, result.stderr[-3000:]
  assert message in result.stderr
  assert BLOCKED not in result.stderr and 'Traceback' not in result.stderr
  assert not (tmp_path / 'run').exists()


def test_train_refuses_a_tfrecord_spec_without_a_default_model(
    no_tf_env, tmp_path):
  (tmp_path / 'feature_spec.json').write_text('{"input_shape": [5, 5, 1]}')
  result = run(no_tf_env, TRAIN, '--dataset=tfrecord',
               f'--data_dir={tmp_path}', f'--root_dir={tmp_path / "run"}')
  assert result.returncode == 1, result.stderr[-3000:]
  assert '--dataset=tfrecord needs --model' in result.stderr
  assert BLOCKED not in result.stderr


def test_train_imports_tensorflow_once_the_flags_are_accepted(no_tf_env,
                                                              tmp_path):
  """Valid flags reach the TensorFlow import (here: the fake's error)."""
  result = run(no_tf_env, TRAIN, '--rounds=1', f'--root_dir={tmp_path}/run')
  assert result.returncode != 0 and BLOCKED in result.stderr


@pytest.mark.parametrize('script,flag', [
    (EXPORT, '--num_samples'), (WRITE_TFRECORDS, '--output_dir'),
    (PLOT, '--run_dirs'),
])
def test_other_launchers_help(no_tf_env, script, flag):
  result = run(no_tf_env, script, '--help')
  assert result.returncode == 1, result.stderr[-3000:]
  assert flag in result.stdout
  assert BLOCKED not in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.parametrize('script,args,message', [
    (EXPORT, [], 'Flag --root_dir must have a value'),
    (EXPORT, ['--root_dir=r', '--num_samples=0'], 'not a positive integer'),
    (EXPORT, ['--root_dir=r', '--int9'], "Unknown command line flag 'int9'"),
    (WRITE_TFRECORDS, [], 'Flag --output_dir must have a value'),
    (WRITE_TFRECORDS, ['--output_dir=o', '--beta=0'], '--beta must be > 0'),
    (WRITE_TFRECORDS, ['--output_dir=o', '--dataset=imagenet'],
     'value should be one of'),
    (WRITE_TFRECORDS, ['--output_dir=o', 'extra'], 'Unexpected arguments'),
    (PLOT, [], 'Flag --run_dirs must have a value'),
    (PLOT, ['--run_dirs=a', 'extra'], 'Unexpected arguments'),
])
def test_other_launchers_refuse_a_bad_command_line(no_tf_env, script, args,
                                                   message):
  result = run(no_tf_env, script, *args)
  assert result.returncode == 1, result.stderr[-3000:]
  assert message in result.stderr
  assert BLOCKED not in result.stderr and 'Traceback' not in result.stderr


def test_write_tfrecords_refuses_a_non_empty_directory_at_once(no_tf_env,
                                                               tmp_path):
  (tmp_path / 'kept').write_text('')
  result = run(no_tf_env, WRITE_TFRECORDS, f'--output_dir={tmp_path}')
  assert result.returncode == 1
  assert 'exists and is not an empty directory' in result.stderr
  assert BLOCKED not in result.stderr


@pytest.mark.parametrize('script', [EXPORT, WRITE_TFRECORDS])
def test_other_launchers_import_tensorflow_once_the_flags_are_accepted(
    no_tf_env, tmp_path, script):
  """Valid flags reach the TensorFlow import (here: the fake's error)."""
  flag = '--root_dir' if script == EXPORT else '--output_dir'
  if script == EXPORT:  # What export checks before TF: files and data.
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'hparams.json').write_text('{"dataset": "digits"}')
    (tmp_path / 'out' / 'model_weights.npz').write_bytes(b'')
  result = run(no_tf_env, script, f'{flag}={tmp_path / "out"}')
  assert result.returncode != 0 and BLOCKED in result.stderr


def test_a_held_run_directory_is_refused_before_tensorflow(no_tf_env,
                                                           tmp_path):
  from tff_feddst.program import run_lock  # pylint: disable=g-import-not-at-top
  with run_lock.hold_run_directory(tmp_path / 'run'):
    result = run(no_tf_env, TRAIN, f'--root_dir={tmp_path / "run"}')
  assert result.returncode == 1, result.stderr[-3000:]
  assert (f'train.py: error: {tmp_path / "run"} is in use by process '
          f'{os.getpid()}') in result.stderr, result.stderr[-3000:]
  assert BLOCKED not in result.stderr and 'Traceback' not in result.stderr


def test_ctrl_c_while_starting_is_one_line_and_writes_nothing(tmp_path):
  """A Ctrl-C during the ~10 s TensorFlow import: no traceback, no run dir.

  The fake `tensorflow` here imports slowly (sleeps) instead of failing, so
  the signal surely lands inside the import.
  """
  fake = tmp_path / 'slow_tf'
  (fake / 'tensorflow').mkdir(parents=True)
  (fake / 'tensorflow' / '__init__.py').write_text(
      'import sys, time\nsys.stderr.write("importing\\n")\nsys.stderr.flush()\n'
      'time.sleep(60)\n')
  env = dict(os.environ, PYTHONPATH=str(fake))
  root = tmp_path / 'run'
  child = subprocess.Popen(
      [sys.executable, str(TRAIN), f'--root_dir={root}', '--rounds=2'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  assert child.stderr.readline() == 'importing\n'  # Inside the import now.
  child.send_signal(signal.SIGINT)
  _, stderr = child.communicate(timeout=60)
  assert child.returncode == 130, stderr
  assert stderr.strip().splitlines() == [
      'train.py: interrupted (SIGINT) while starting; nothing was written — '
      'run the same command to start.'], stderr
  assert not root.exists()


def test_export_refuses_a_directory_that_is_not_a_run(no_tf_env, tmp_path):
  result = run(no_tf_env, EXPORT, f'--root_dir={tmp_path}')
  assert result.returncode == 1, result.stderr[-3000:]
  assert f'--root_dir={tmp_path}: no hparams.json' in result.stderr
  assert BLOCKED not in result.stderr and 'Traceback' not in result.stderr


def test_export_refuses_missing_data_before_tensorflow(no_tf_env, tmp_path):
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  (run_dir / 'hparams.json').write_text(
      '{"dataset": "emnist", "model": "mlp", "data_dir": "/nonexistent/e"}')
  (run_dir / 'model_weights.npz').write_bytes(b'')
  result = run(no_tf_env, EXPORT, f'--root_dir={run_dir}')
  assert result.returncode == 1, result.stderr[-3000:]
  assert ('export.py: error: Federated EMNIST not found. Path tried:\n'
          '  /nonexistent/e/emnist_all.sqlite') in result.stderr
  assert BLOCKED not in result.stderr and 'Traceback' not in result.stderr
