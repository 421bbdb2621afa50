"""launchers/train.py end to end (child processes) and its flag checks (in-process).

Every test that reads the `launcher_runs` runs is in this file, so that the
pytest-xdist worker that runs it makes those runs once.
"""

import dataclasses
import os
from pathlib import Path
import re
import signal
import socket
import subprocess
import sys
import time

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from launcher_helpers import (EXPORT, REPO, TIMEOUT, TINY_FLAGS, TRAIN,
                              child_env, process_alive, read_rows, run_script,
                              without_wall_clock)
from tff_feddst import data
from tff_feddst import program


def test_run_writes_csv_tensorboard_checkpoints_and_weights(launcher_runs):
  assert launcher_runs.full.returncode == 0, launcher_runs.full.stderr[-3000:]
  paths = program.RunPaths.of(launcher_runs.full_dir)
  rows = read_rows(launcher_runs.full_dir)
  assert [r['round'] for r in rows] == ['1', '2', '3', '4', '5', '6']
  assert [bool(r['test/accuracy']) for r in rows] == [False, True] * 3
  assert list(paths.logdir.glob('events.out.tfevents.*'))
  assert (paths.checkpoints / 'program_state_6' / 'saved_model.pb').exists()
  hparams = program.read_hparams(launcher_runs.full_dir)
  assert hparams['algorithm'] == 'feddst_consensus'
  assert hparams['sparsity'] == 0.8 and hparams['final_sparsity'] == 0.85
  assert hparams['remember_old'] and hparams['readjust_after_epoch'] == 1
  rows = read_rows(launcher_runs.full_dir)
  # The new options act: the global mask turns over and gets sparser.
  assert float(rows[-1]['finalizer/mask_turnover']) > 0
  assert float(rows[-1]['density/total']) < float(rows[0]['density/total'])
  assert hparams['readjustment_end_round'] == 6 and hparams['rounds'] == 6
  assert paths.model_weights.exists()
  log = launcher_runs.full.stderr
  assert 'round 6/6 | elapsed' in log and '| test acc' in log and 'MB' in log
  assert 'Traceback' not in log
  # No TensorFlow/CUDA start-up chatter, no library INFO lines.
  for noise in ('cuDNN', 'cuFFT', 'cuBLAS', 'TensorRT', 'cuda', 'oneDNN',
                'rebuild TensorFlow', 'Grappler', 'grappler', 'keras_utils',
                'fingerprint', 'E tensorflow', 'W tensorflow'):
    assert noise not in log, noise


def test_killed_run_resumes_exactly(launcher_runs):
  assert launcher_runs.killed_returncode == -9, launcher_runs.killed_stderr[-3000:]
  assert 'round 3/6' in launcher_runs.killed_stderr
  assert 'round 4/6' not in launcher_runs.killed_stderr
  # The killed child's worker died with it.
  pid = launcher_runs.killed_worker_pid
  assert pid is not None
  deadline = time.monotonic() + 10
  while process_alive(pid) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert not process_alive(pid), f'worker_binary {pid} outlived its parent'

  resumed = launcher_runs.resumed
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resuming' in resumed.stderr and 'after round 3' in resumed.stderr
  assert 'round 1/6' not in resumed.stderr and 'round 4/6' in resumed.stderr
  full_rows = read_rows(launcher_runs.full_dir)
  resumed_rows = read_rows(launcher_runs.resumed_dir)
  assert without_wall_clock(resumed_rows) == without_wall_clock(full_rows)
  # Masks changed after the resume point, so the comparison is not trivial.
  assert any(r['round/readjusted'] == '1' for r in full_rows[3:])
  full_weights, full_round = program.load_model_weights(launcher_runs.full_dir)
  resumed_weights, resumed_round = program.load_model_weights(
      launcher_runs.resumed_dir)
  assert full_round == resumed_round == 6
  for a, b in zip(full_weights.trainable + full_weights.non_trainable,
                  resumed_weights.trainable + resumed_weights.non_trainable):
    np.testing.assert_array_equal(a, b)


def test_bad_flag_exits_nonzero_naming_the_flag():
  result = run_script(TRAIN, '--sparsity=1.5', '--root_dir=/nonexistent/never')
  assert result.returncode != 0
  assert '--sparsity' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not os.path.exists('/nonexistent/never')


# In-process checks of the flag validators and defaults (no training).


@pytest.mark.parametrize('argv,flag', [
    (['--sparsity=1.0'], '--sparsity'),
    (['--sparsity=-0.1'], '--sparsity'),
    (['--beta=0'], '--beta'),
    (['--rounds=-1'], '--rounds'),
    (['--clients_per_round=21'], '--clients_per_round'),
    (['--clients_per_round=30', '--total_clients=25'], '--clients_per_round'),
    (['--algorithm=fedsgd'], '--algorithm'),
    (['--dataset=imagenet'], '--dataset'),
    (['--model=resnet'], '--model'),
    (['--partition=shards'], '--partition'),
    (['--algorithm=fedavg', '--sparsity=0.5'], '--sparsity'),
    (['--algorithm=random_mask', '--readjustment_ratio=0.1'],
     '--readjustment_ratio'),
    (['--algorithm=feddst', '--prox_mu=0.1'], '--prox_mu'),
    (['--algorithm=fedprox', '--prox_mu=0'], '--prox_mu'),
    (['--client_momentum=1.0'], '--client_momentum'),
    (['--readjustment_ratio=1.5'], '--readjustment_ratio'),
    (['--upload_cap_mb=0'], '--upload_cap_mb'),
    (['--workers=localhost'], '--workers'),
    (['--dataset=tfrecord'], '--data_dir'),
    (['--algorithm=random_mask', '--remember_old'], '--remember_old'),
    (['--readjust_after_epoch=11'], '--readjust_after_epoch'),
    (['--sparsity=0.9', '--final_sparsity=0.8'], '--final_sparsity'),
    # Differential privacy.
    (['--algorithm=fedavg', '--dp_noise_multiplier=-1', '--dp_clip_norm=1'],
     '--dp_noise_multiplier must be >= 0'),
    (['--algorithm=fedavg', '--dp_noise_multiplier=1', '--dp_clip_norm=0'],
     '--dp_clip_norm must be > 0'),
    (['--algorithm=fedavg', '--dp_noise_multiplier=1', '--dp_clip_norm=1',
      '--dp_delta=1'], '--dp_delta must be in'),
    (['--algorithm=fedavg', '--dp_noise_multiplier=1', '--dp_clip_norm=1',
      '--dp_delta=0'], '--dp_delta must be in'),
    (['--algorithm=fedavg', '--dp_clip_norm=1'],
     '--dp_clip_norm needs --dp_noise_multiplier'),
    (['--algorithm=fedavg', '--dp_noise_multiplier=1'],
     'exactly one of --dp_clip_norm'),
    (['--algorithm=fedavg', '--dp_noise_multiplier=1', '--dp_clip_norm=1',
      '--dp_adaptive_quantile=0.5'], 'exactly one of --dp_clip_norm'),
    (['--algorithm=fedavg', '--dp_noise_multiplier=0.1',
      '--dp_adaptive_quantile=1.5'], '--dp_adaptive_quantile must be in'),
    (['--algorithm=fedavg', '--dp_noise_multiplier=1',
      '--dp_adaptive_quantile=0.5'], '--dp_noise_multiplier=1.0 needs more'),
    (['--dp_noise_multiplier=1', '--dp_clip_norm=1'],
     '--readjustment_ratio must be 0 with --dp_noise_multiplier: DP runs '
     'keep the global mask fixed, because'),
    (['--algorithm=random_mask', '--dp_noise_multiplier=1',
      '--dp_clip_norm=1', '--upload_dtype=bfloat16'], '--upload_dtype'),
    (['--algorithm=random_mask', '--dp_noise_multiplier=1',
      '--dp_clip_norm=1', '--final_sparsity=0.9'], '--final_sparsity'),
])
def test_invalid_flags_rejected(parse, argv, flag):
  with pytest.raises(flags.IllegalFlagValueError, match=flag):
    parse(*argv)


def test_dp_flags_resolve(launcher, parse):
  hp = parse().resolve_hparams()
  assert [hp[n] for n in ('dp_noise_multiplier', 'dp_clip_norm',
                          'dp_adaptive_quantile', 'dp_delta')] == [None] * 4
  launcher.FLAGS.unparse_flags()
  hp = parse('--algorithm=random_mask', '--dp_noise_multiplier=0',
             '--dp_clip_norm=0.5', '--dp_delta=1e-3').resolve_hparams()
  assert (hp['dp_noise_multiplier'], hp['dp_clip_norm'], hp['dp_delta'],
          hp['readjustment_ratio']) == (0.0, 0.5, 1e-3, 0.0)


def test_default_demo_and_paper_sizes(parse):
  hp = parse().resolve_hparams()
  assert (hp['dataset'], hp['model'], hp['algorithm']) == (
      'digits', 'digits_cnn', 'feddst')
  assert (hp['total_clients'], hp['clients_per_round'], hp['rounds']) == (
      20, 5, 40)
  assert hp['readjustment_end_round'] == 20  # rounds // 2.
  assert (hp['sparsity'], hp['readjustment_ratio'], hp['beta'],
          hp['client_epochs'], hp['batch_size'], hp['client_weight_decay']) == (
              0.8, 0.05, 0.1, 10, 32, 1e-3)


def test_paper_sizes_and_algorithm_defaults(launcher, parse):
  hp = parse('--dataset=mnist', '--algorithm=fedavgm').resolve_hparams()
  assert (hp['model'], hp['total_clients'], hp['clients_per_round'],
          hp['rounds'], hp['readjustment_end_round']) == (
              'mnist_cnn', 400, 20, 400, None)
  assert (hp['sparsity'], hp['readjustment_ratio'], hp['server_momentum']) == (
      0.0, 0.0, 0.9)
  launcher.FLAGS.unparse_flags()
  hp = parse('--dataset=cifar10', '--algorithm=feddst_prox',
             '--rounds=100').resolve_hparams()
  assert (hp['model'], hp['prox_mu'], hp['readjustment_end_round'],
          hp['rounds_between_readjustments']) == ('cifar_cnn', 1.0, 50, 10)
  launcher.FLAGS.unparse_flags()
  hp = parse('--algorithm=random_mask', '--sparsity=0.9').resolve_hparams()
  assert (hp['sparsity'], hp['readjustment_ratio'],
          hp['rounds_between_readjustments']) == (0.9, 0.0, None)


def test_first_clients_restricts_train_and_test(launcher):
  from tff_feddst import data  # pylint: disable=g-import-not-at-top
  federated = data.build_federated_data(
      data.make_synthetic(200, image_shape=(4, 4, 1), num_classes=4),
      partition='iid', num_clients=6, seed=0)
  first = data.first_clients(federated, 2)
  assert first.client_ids == federated.client_ids[:2] == first.test.client_ids
  for split in ('train', 'test'):
    got = list(getattr(first, split).create_tf_dataset_for_client(
        first.client_ids[1]).as_numpy_iterator())
    want = list(getattr(federated, split).create_tf_dataset_for_client(
        federated.client_ids[1]).as_numpy_iterator())
    assert len(got) == len(want) > 0
    np.testing.assert_array_equal(np.stack([e['x'] for e in got]),
                                  np.stack([e['x'] for e in want]))


def test_unknown_flag_gets_a_suggestion_and_validator_errors_are_short(
    launcher, capsys):
  from tff_feddst import quiet  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as exit_info:
    quiet.parse_flags_with_suggestions(['train.py', '--epochs=3'])
  assert exit_info.value.code == 1
  assert 'Did you mean --client_epochs?' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    quiet.parse_flags_with_suggestions(['train.py', '--sparsity=1.5'])
  err = capsys.readouterr().err
  assert 'FATAL Flags parsing error: --sparsity must be in [0, 1)' in err
  assert 'remember_old=None' not in err
  launcher.FLAGS.unparse_flags()


@dataclasses.dataclass
class RecordsRun:
  """TINY_FLAGS' partition written as TFRecords, and one command started
  twice at once on one root directory: one trained, one was refused."""
  root: Path
  trained: subprocess.CompletedProcess
  trained_pid: int
  refused: subprocess.CompletedProcess


@pytest.fixture(scope='module')
def records_run(tmp_path_factory):
  base = tmp_path_factory.mktemp('records_run')
  # train.py's bundled partition for TINY_FLAGS (digits, 10 clients,
  # Dirichlet 0.1, seed 3), written by the library's writer.
  data.write_tfrecord(data.build_federated_data(
      data.load_digits(), num_clients=10, beta=0.1, seed=3), base / 'records')
  root = base / 'run'
  command = [sys.executable, str(TRAIN),
             *[f for f in TINY_FLAGS if not f.startswith('--dataset=')],
             '--dataset=tfrecord', f'--data_dir={base / "records"}',
             f'--root_dir={root}']
  # Started together: whichever takes the lock first is "the first".
  runs = [subprocess.Popen(command, cwd=REPO, env=child_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for _ in range(2)]
  try:
    deadline = time.monotonic() + TIMEOUT
    while all(r.poll() is None for r in runs):
      assert time.monotonic() < deadline
      time.sleep(0.05)
    ended = next(r for r in runs if r.poll() is not None)
    other = runs[1 - runs.index(ended)]
    # The refused one ended while the other still trained.
    assert other.poll() is None
    outputs = [r.communicate(timeout=TIMEOUT) for r in (ended, other)]
  finally:
    for r in runs:
      r.kill()
      r.wait()
  return RecordsRun(
      root=root, trained_pid=other.pid,
      refused=subprocess.CompletedProcess([], ended.returncode, *outputs[0]),
      trained=subprocess.CompletedProcess([], other.returncode, *outputs[1]))


def test_second_run_on_a_root_dir_is_refused(records_run):
  refused = records_run.refused.stderr
  assert records_run.refused.returncode == 1, refused[-3000:]
  assert (f'train.py: error: {records_run.root} is in use by process '
          f'{records_run.trained_pid} on host {socket.gethostname()}'
          ) in refused, refused[-3000:]
  assert 'Traceback' not in refused
  assert 'Started TFF worker' not in refused  # Refused before any work.


def test_tfrecord_run_trains_like_the_bundled_reader(records_run,
                                                     launcher_runs):
  assert records_run.trained.returncode == 0, records_run.trained.stderr[-3000:]
  # Every round exactly once, and the same as the bundled reader's run.
  assert without_wall_clock(read_rows(records_run.root)) == without_wall_clock(
      read_rows(launcher_runs.full_dir))


def test_export_from_run(records_run, tmp_path):
  out = tmp_path / 'export'
  proc = run_script(EXPORT, f'--root_dir={records_run.root}',
                    f'--output_dir={out}', '--num_samples=64')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Exported round 6' in proc.stdout
  # Checked on the central test images read back from the records.
  assert 'checked on 64 test images' in proc.stdout
  for name in ('model_dense.tflite', 'model_sparse.tflite',
               'model_sparse_int8.tflite'):
    assert f'| {name} |' in proc.stdout
    assert (out / name).stat().st_size > 0
  assert (out / 'saved_model' / 'saved_model.pb').exists()
  # Independent check: the SavedModel's kernels are as sparse as the run's masks.
  with np.load(records_run.root / 'model_weights.npz') as f:
    masks = [f[k] for k in sorted(f.files) if k.startswith('non_trainable_')
             and f[k].ndim == 2]
  model = tf.keras.models.load_model(str(out / 'saved_model'))
  kernels = [w.numpy() for w in model.weights if w.shape.ndims == 2]
  assert len(kernels) == len(masks)
  for k, m in zip(kernels, masks):
    assert np.count_nonzero(k) <= m.sum()
    assert np.all(k[m == 0] == 0)


# Ctrl-C and SIGTERM stop train.py with one line; rerunning resumes exactly.
LINE = re.compile(r'^Interrupted (during|after) round (\d+); the last '
                  r'checkpoint is round (\d+) — run the same command to '
                  r'resume\.$', re.MULTILINE)


def _checkpoints(root):
  """Versions of the complete checkpoints in `root`."""
  d = program.RunPaths.of(root).checkpoints
  if not d.exists():
    return []
  return sorted(int(m.group(1)) for p in d.iterdir()
                if (m := re.fullmatch(r'program_state_(\d+)', p.name)))


def test_signal_stops_with_one_line_and_leaves_a_resumable_run(tmp_path):
  # Ctrl-C. SIGTERM takes the same handler (`program.signals_raise`; its
  # exit code 143: tests/program/test_program_interrupts.py).
  signals = (signal.SIGINT,)
  commands = {s: [sys.executable, str(TRAIN), *TINY_FLAGS,
                  f'--root_dir={tmp_path / s.name}'] for s in signals}
  # Side by side; each gets its signal once its checkpoint of round 2 exists.
  children = {s: subprocess.Popen(commands[s], cwd=REPO, env=child_env(),
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
              for s in signals}
  try:
    deadline = time.monotonic() + TIMEOUT
    waiting = set(signals)
    while waiting:
      for s in list(waiting):
        assert children[s].poll() is None, f'{s.name} run ended unsignalled'
        if 2 in _checkpoints(tmp_path / s.name):
          children[s].send_signal(s)
          waiting.remove(s)
      assert time.monotonic() < deadline
      time.sleep(0.05)
    outputs = {s: children[s].communicate(timeout=TIMEOUT) for s in signals}
  finally:
    for child in children.values():
      child.kill()
      child.wait()

  for s in signals:
    root = tmp_path / s.name
    out, err = outputs[s]
    assert children[s].returncode == 128 + s, err[-3000:]
    assert 'Traceback' not in out + err, err[-3000:]
    assert 'gRPC' not in err, err[-3000:]  # No noise from the cut round.
    worker = int(re.search(r'Started TFF worker pid (\d+)', err).group(1))
    deadline = time.monotonic() + 10
    while process_alive(worker) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert not process_alive(worker), 'the worker outlived the launcher'
    lines = LINE.findall(err)
    assert len(lines) == 1, err[-3000:]
    assert err.count('Interrupted') == 1
    when, round_num, last = lines[0][0], int(lines[0][1]), int(lines[0][2])
    # checkpoint_every=1: the round before (or, after its release, this one)
    # is the last complete checkpoint, and nothing newer is half-written.
    expected_last = (round_num - 1,) if when == 'during' else (
        round_num - 1, round_num)
    assert last in expected_last and last >= 2, lines
    assert _checkpoints(root)[-1] == last
    assert not [p for p in program.RunPaths.of(root).checkpoints.iterdir()
                if 'temp' in p.name]
    released = round_num if when == 'after' else round_num - 1
    assert [r['round'] for r in read_rows(root)] == [
        str(r) for r in range(1, released + 1)]
    assert program.load_model_weights(root)[1] == last
    # That the same command then continues exactly from such a directory is
    # launcher_runs' killed -> resumed pair (test_killed_run_resumes_exactly).
