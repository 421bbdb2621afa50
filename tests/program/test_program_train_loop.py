"""The training loop in-process: releases, resume, upload cap, evaluation, failures.

One tiny FedDST process (mlp on digits, 10 clients) serves every test.
"""

import csv
import fcntl
import os
import shutil
import signal
import time

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import data
from tff_feddst import models
from tff_feddst import program
from tff_feddst import runtime
from tff_feddst.program import checkpoints
from tff_feddst.program import evaluation
from tff_feddst.program import train_loop

HPARAMS = {'algorithm': 'feddst', 'sparsity': 0.8}


def loss_fn():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope='module')
def setup():
  federated = data.build_federated_data(
      data.load('digits'), partition='dirichlet', num_clients=10, beta=0.5,
      seed=0)
  model_fn = models.get_model_fn('mlp', federated.input_shape,
                                 federated.num_classes)
  process = algorithms.build_weighted_feddst(
      model_fn, loss_fn=loss_fn,
      input_spec=program.batch_input_spec(federated, 16),
      metrics_fn=lambda: [tf.keras.metrics.SparseCategoricalAccuracy()],
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.05,
                                                             momentum=0.9),
      sparsity=0.8, readjustment_ratio=0.2, rounds_between_readjustments=1,
      readjustment_end_round=10, seed=0)
  return federated, model_fn, process


def config(root_dir, **overrides):
  kwargs = dict(root_dir=str(root_dir), rounds=3, clients_per_round=3,
                batch_size=16, seed=1, eval_every=2, checkpoint_every=2)
  kwargs.update(overrides)
  return program.TrainConfig(**kwargs)


def run(setup, cfg, hparams=HPARAMS):
  federated, model_fn, process = setup
  return program.train(process, federated, cfg, model_fn=model_fn,
                       loss_fn=loss_fn, hparams=hparams)


def read_csv(root_dir):
  with open(program.RunPaths.of(root_dir).metrics_csv, newline='') as f:
    return list(csv.DictReader(f))


def without_wall_clock(rows):
  return [{k: v for k, v in row.items() if not k.startswith('time/')}
          for row in rows]


def assert_same_weights(result, other):
  for a, b in zip(setup_weights(result), setup_weights(other)):
    np.testing.assert_array_equal(a, b)


def checkpoint_dirs(root_dir):
  return sorted(p.name for p in program.RunPaths.of(root_dir).checkpoints
                .iterdir())


def send_and_wait(signum):
  """Sends `signum` to this process; the handler runs within the sleeps."""
  os.kill(os.getpid(), signum)
  for _ in range(200):
    time.sleep(0.005)


@pytest.fixture(scope='module')
def reference_run(setup, tmp_path_factory):
  """3 rounds, checkpoints after rounds 2 and 3, evaluation at 2 and 3."""
  root = tmp_path_factory.mktemp('reference')
  result = run(setup, config(root))
  return root, result


def test_run_releases_one_row_per_round(setup, reference_run):
  root, result = reference_run
  rows = read_csv(root)
  assert [r['round'] for r in rows] == ['1', '2', '3']
  assert result.rounds_completed == 3 and not result.stopped_by_upload_cap
  # Evaluated every 2 rounds and at the last one.
  assert [bool(r['test/accuracy']) for r in rows] == [False, True, True]
  for key in ('train/accuracy', 'train/loss', 'round/uplink_bytes',
              'round/cumulative_uplink_bytes', 'density/fc1/kernel',
              'density/fc2/kernel', 'density/total', 'time/elapsed_seconds'):
    assert rows[0][key], key
  uplinks = [int(r['round/uplink_bytes']) for r in rows]
  assert [int(r['round/cumulative_uplink_bytes']) for r in rows] == list(
      np.cumsum(uplinks))
  assert 0.1 < float(rows[-1]['density/total']) < 0.3  # S = 0.8.
  assert program.read_hparams(root)['sparsity'] == 0.8
  weights, round_num = program.load_model_weights(root)
  assert round_num == 3
  expected = setup[2].get_model_weights(result.state)  # Masks unpacked.
  for a, b in zip(weights.trainable + weights.non_trainable,
                  list(expected.trainable) + list(expected.non_trainable)):
    np.testing.assert_array_equal(a, b)
  versions = sorted(p.name for p in program.RunPaths.of(root).checkpoints
                    .iterdir())
  assert versions == ['program_state_2', 'program_state_3']


def setup_weights(result):
  w = result.state.global_model_weights
  return list(w.trainable) + list(w.non_trainable)


def test_resume_replaces_rounds_released_after_the_last_checkpoint(
    setup, reference_run, tmp_path):
  root = tmp_path / 'run'
  shutil.copytree(reference_run[0], root)
  # As if the run died after releasing round 3 but before checkpointing it.
  shutil.rmtree(program.RunPaths.of(root).checkpoints / 'program_state_3')
  result = run(setup, config(root, rounds=4))
  rows = read_csv(root)
  assert [r['round'] for r in rows] == ['1', '2', '3', '4']
  # Round 3 was re-run (no longer the last round, so not evaluated).
  assert not rows[2]['test/accuracy'] and rows[3]['test/accuracy']
  ref = read_csv(reference_run[0])
  for key in ('train/loss', 'round/cumulative_uplink_bytes',
              'density/fc1/kernel'):
    assert rows[2][key] == ref[2][key], key  # Same round 3 as before.
  assert result.rounds_completed == 4
  assert program.load_model_weights(root)[1] == 4
  # A complete run restarted does nothing.
  again = run(setup, config(root, rounds=4))
  assert again.rounds_completed == 4 and again.metrics == {}
  assert len(read_csv(root)) == 4


def test_hparams_mismatch_refused_before_training(setup, reference_run):
  root = reference_run[0]
  with pytest.raises(program.HparamsMismatchError,
                     match=r'(?s)batch_size: 16 .* 32.*sparsity: 0.8 .* 0.5'):
    run(setup, config(root, batch_size=32),
        hparams={'algorithm': 'feddst', 'sparsity': 0.5})
  assert len(read_csv(root)) == 3


def test_upload_cap_stops_at_first_round_reaching_it(setup, reference_run,
                                                     tmp_path):
  ref = read_csv(reference_run[0])
  after_round_1 = int(ref[0]['round/cumulative_uplink_bytes'])
  cap_mb = (after_round_1 + 1) / 1e6
  result = run(setup, config(tmp_path, rounds=50, upload_cap_mb=cap_mb))
  rows = read_csv(tmp_path)
  assert result.stopped_by_upload_cap and result.rounds_completed == 2
  assert [r['round'] for r in rows] == ['1', '2']
  assert int(rows[1]['round/cumulative_uplink_bytes']) >= cap_mb * 1e6
  assert rows[1]['test/accuracy']  # The last round is evaluated.
  # Restarting with the cap reached trains nothing more.
  assert run(setup, config(tmp_path, rounds=50,
                           upload_cap_mb=cap_mb)).rounds_completed == 2


def test_upload_cap_is_refused_for_a_process_that_counts_no_uplink(
    setup, tmp_path):
  federated, model_fn, _ = setup
  stock = tff.learning.algorithms.build_weighted_fed_avg(
      lambda: tff.learning.models.from_keras_model(
          model_fn(), loss=loss_fn(),
          input_spec=program.batch_input_spec(federated, 16)),
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.05))
  with pytest.raises(ValueError, match='upload_cap_mb=1.0 needs a process'):
    program.train(stock, federated, config(tmp_path / 'run',
                                           upload_cap_mb=1.0),
                  model_fn=model_fn, loss_fn=loss_fn, hparams=HPARAMS)
  assert not (tmp_path / 'run').exists()  # Refused before anything is written.


def test_evaluator_matches_per_client_loop(setup, reference_run):
  federated, model_fn, process = setup
  weights = process.get_model_weights(reference_run[1].state)
  got = evaluation.Evaluator(federated, model_fn, loss_fn)(weights)
  model = models.keras_model_from_weights(model_fn, weights)
  x, y = federated.central_test
  logits = model.predict(x, verbose=0)
  assert got['test/accuracy'] == pytest.approx(
      np.mean(np.argmax(logits, -1) == y), abs=1e-6)
  log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  assert got['test/loss'] == pytest.approx(
      -np.mean(log_softmax[np.arange(len(y)), y]), rel=1e-4)
  accuracies = []
  for cid in federated.test.client_ids:
    batch = list(federated.test.create_tf_dataset_for_client(cid).batch(
        10_000).as_numpy_iterator())
    if batch:
      pred = np.argmax(model.predict(batch[0]['x'], verbose=0), -1)
      accuracies.append(np.mean(pred == batch[0]['y']))
  assert got['test/clients'] == len(accuracies)
  assert got['test/client_mean_accuracy'] == pytest.approx(
      np.mean(accuracies), abs=1e-9)


class _FailingProcess:

  def next(self, state, datasets):
    raise RuntimeError('grpc said no')


class _Runtime:

  def __init__(self, dead):
    self.dead = dead

  def check_workers(self):
    if self.dead:
      raise runtime.WorkerUnavailableError(
          'TFF worker at 127.0.0.1:4321 exited with code -9.')


def test_dead_worker_error_names_worker_and_checkpoint():
  with pytest.raises(runtime.WorkerUnavailableError,
                     match=r'Round 5 failed .*127\.0\.0\.1:4321.*round 4'):
    train_loop.next_or_explain(_FailingProcess(), None, [],
                               tff_runtime=_Runtime(dead=True), round_num=5,
                               last_checkpoint=4)
  with pytest.raises(RuntimeError, match='grpc said no'):
    train_loop.next_or_explain(_FailingProcess(), None, [],
                               tff_runtime=_Runtime(dead=False), round_num=5,
                               last_checkpoint=4)


@pytest.mark.parametrize('field,value', [
    ('rounds', 0), ('clients_per_round', 0), ('eval_every', 0),
    ('checkpoint_every', 0), ('upload_cap_mb', 0.0), ('seed', -1)])
def test_train_config_rejects(field, value, tmp_path):
  with pytest.raises(ValueError, match=f'TrainConfig.{field}'):
    config(tmp_path, **{field: value})


def test_run_hparams_merges_and_refuses_contradictions(tmp_path):
  merged = program.run_hparams(config(tmp_path), {'algorithm': 'x', 'seed': 1})
  assert merged['algorithm'] == 'x' and merged['rounds'] == 3
  assert 'root_dir' not in merged
  with pytest.raises(ValueError, match='seed'):
    program.run_hparams(config(tmp_path), {'seed': 2})


def test_sigterm_stops_between_rounds_and_resume_equals_uninterrupted(
    setup, reference_run, tmp_path):
  before = signal.getsignal(signal.SIGTERM)

  def after_checkpoint(round_num):
    if round_num == 2:
      send_and_wait(signal.SIGTERM)

  with pytest.raises(program.TrainingInterrupted) as info:
    federated, model_fn, process = setup
    program.train(process, federated, config(tmp_path, checkpoint_every=1),
                  model_fn=model_fn, loss_fn=loss_fn, hparams=HPARAMS,
                  after_checkpoint=after_checkpoint)
  e = info.value
  assert (e.signum, e.exit_code) == (signal.SIGTERM, 143)
  assert (e.where, e.last_checkpoint) == ('after round 2', 2)
  assert str(e) == ('Interrupted after round 2; the last checkpoint is round '
                    '2 — train again with the same root directory to resume.')
  assert e.explain('run the same command').endswith(
      '— run the same command to resume.')
  assert signal.getsignal(signal.SIGTERM) is before
  assert [r['round'] for r in read_csv(tmp_path)] == ['1', '2']

  result = run(setup, config(tmp_path, checkpoint_every=1))
  assert without_wall_clock(read_csv(tmp_path)) == without_wall_clock(
      read_csv(reference_run[0]))
  assert_same_weights(result, reference_run[1])


def test_signal_during_checkpoint_waits_for_the_save(setup, tmp_path,
                                                     monkeypatch):
  save = checkpoints.save_model_weights

  def save_after_a_signal(path, weights, round_num):
    if round_num == 2:  # The state is saved; the weights come next.
      send_and_wait(signal.SIGINT)
    save(path, weights, round_num)

  monkeypatch.setattr(checkpoints, 'save_model_weights', save_after_a_signal)
  with pytest.raises(program.TrainingInterrupted) as info:
    run(setup, config(tmp_path, checkpoint_every=1))
  e = info.value
  assert (e.signum, e.exit_code) == (signal.SIGINT, 130)
  assert (e.where, e.last_checkpoint) == ('after round 2', 2)
  # The checkpoint went through entirely: state and weights of round 2.
  assert program.load_model_weights(tmp_path)[1] == 2
  assert checkpoint_dirs(tmp_path) == ['program_state_1', 'program_state_2']
  assert [r['round'] for r in read_csv(tmp_path)] == ['1', '2']


def test_signal_swallowed_by_a_library_stops_at_the_next_round(setup,
                                                               tmp_path):
  def after_checkpoint(round_num):
    if round_num == 1:
      try:  # Code that catches everything and carries on.
        send_and_wait(signal.SIGINT)
      except BaseException:  # pylint: disable=broad-except
        pass

  federated, model_fn, process = setup
  with pytest.raises(program.TrainingInterrupted) as info:
    program.train(process, federated, config(tmp_path, checkpoint_every=1),
                  model_fn=model_fn, loss_fn=loss_fn, hparams=HPARAMS,
                  after_checkpoint=after_checkpoint)
  e = info.value
  assert (e.signum, e.where, e.last_checkpoint) == (signal.SIGINT,
                                                    'after round 1', 1)
  assert [r['round'] for r in read_csv(tmp_path)] == ['1']


def test_directory_in_use_is_refused_before_writing(setup, tmp_path):
  # Another holder: a flock on its own open file (flock is per open file).
  run_paths = program.RunPaths.of(tmp_path)
  with open(run_paths.lock, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write('4242 elsewhere\n')
    f.flush()
    with pytest.raises(program.RunDirectoryInUseError,
                       match=f'{tmp_path} is in use by process 4242 on host '
                             'elsewhere'):
      run(setup, config(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == ['.lock']


def _truncate_checkpoint(root_dir, version):
  """Halves the variables of checkpoint `version`, as a crash mid-write does."""
  variables = (program.RunPaths.of(root_dir).checkpoints /
               f'program_state_{version}' / 'variables')
  for path in variables.glob('variables.data-*'):
    with open(path, 'r+b') as f:
      f.truncate(path.stat().st_size // 2)


def test_damaged_latest_checkpoint_resumes_from_the_one_before(
    setup, reference_run, tmp_path, caplog):
  run(setup, config(tmp_path, checkpoint_every=1))
  assert checkpoint_dirs(tmp_path) == [
      'program_state_1', 'program_state_2', 'program_state_3']
  # A crash during the save of round 3 after a bad write of round 2.
  checkpoints = program.RunPaths.of(tmp_path).checkpoints
  shutil.rmtree(checkpoints / 'program_state_3')
  _truncate_checkpoint(tmp_path, 2)

  result = run(setup, config(tmp_path, checkpoint_every=1))
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == 'WARNING' and 'damaged' in r.getMessage()]
  assert len(warnings) == 1 and 'program_state_2' in warnings[0], warnings
  assert 'round 1' in warnings[0]
  assert result.rounds_completed == 3
  assert without_wall_clock(read_csv(tmp_path)) == without_wall_clock(
      read_csv(reference_run[0]))
  assert_same_weights(result, reference_run[1])
  assert program.load_model_weights(tmp_path)[1] == 3
  # The damaged one is kept aside; the rounds after 1 were saved anew.
  assert checkpoint_dirs(tmp_path) == [
      'damaged_program_state_2', 'program_state_1', 'program_state_2',
      'program_state_3']


def test_no_loadable_checkpoint_is_one_clear_error(setup, tmp_path):
  run(setup, config(tmp_path, rounds=2, checkpoint_every=1))
  for version in (1, 2):
    _truncate_checkpoint(tmp_path, version)
  checkpoints = program.RunPaths.of(tmp_path).checkpoints
  with pytest.raises(program.NoUsableCheckpointError,
                     match=f'None of the 2 checkpoints in {checkpoints} loads'):
    run(setup, config(tmp_path, rounds=3, checkpoint_every=1))
  # Nothing was moved or written: the user decides.
  assert checkpoint_dirs(tmp_path) == ['program_state_1', 'program_state_2']
  assert [r['round'] for r in read_csv(tmp_path)] == ['1', '2']


def _rewrite_checkpoint_2(setup, reference_run, tmp_path, rewrite):
  """A copy of the reference run whose only checkpoint is round 2's, saved
  again as `rewrite(state, counters)` returns it; returns the copy's root."""
  import asyncio  # pylint: disable=g-import-not-at-top
  _, _, process = setup
  shutil.copytree(reference_run[0], tmp_path / 'run')
  root = tmp_path / 'run'
  state_dir = program.RunPaths.of(root).checkpoints
  manager = tff.program.FileProgramStateManager(
      str(state_dir), prefix='program_state_')
  state, counters = asyncio.run(manager.load(
      2, (process.initialize(), checkpoints.counters())))
  shutil.rmtree(state_dir / 'program_state_2')
  shutil.rmtree(state_dir / 'program_state_3')
  asyncio.run(manager.save(rewrite(state, counters), 2))
  return root


def test_checkpoint_with_other_counters_is_one_clear_error(
    setup, reference_run, tmp_path):
  """Counters of another layout (here an extra uplink copy, as checkpoints
  of early versions held) are refused on load with the checkpoint named."""
  import collections  # pylint: disable=g-import-not-at-top

  def other_counters(state, counters):
    assert list(counters) == ['round', 'elapsed_seconds']
    return state, collections.OrderedDict(
        round=np.int64(2), cumulative_uplink_bytes=np.int64(1),
        elapsed_seconds=counters['elapsed_seconds'])

  root = _rewrite_checkpoint_2(setup, reference_run, tmp_path, other_counters)
  with pytest.raises(program.NoUsableCheckpointError,
                     match='None of the 1 checkpoints in .* program_state_2'):
    run(setup, config(root))
  assert checkpoint_dirs(root) == ['program_state_2']


def test_checkpoint_of_another_state_layout_is_one_clear_error(
    setup, reference_run, tmp_path):
  """A state whose arrays differ (e.g. float round-0 masks, as before they
  were bit-packed) is refused on load, not deep in TFF's serializer."""

  def float_round0_masks(state, counters):
    arrays = [np.zeros([8, 8], np.float32) if np.asarray(a).dtype == np.uint8
              else a for a in tf.nest.flatten(state)]
    return tf.nest.pack_sequence_as(state, arrays), counters

  root = _rewrite_checkpoint_2(setup, reference_run, tmp_path,
                               float_round0_masks)
  with pytest.raises(program.NoUsableCheckpointError,
                     match=r'state array \d+ is float32\[8, 8\], this '
                     r'process expects uint8\['):
    run(setup, config(root))
  assert checkpoint_dirs(root) == ['program_state_2']


def test_privacy_metrics_only_for_a_dp_process():
  plain = train_loop.TrainConfig(root_dir='x', rounds=3, clients_per_round=4)
  assert train_loop.privacy_metrics(plain, 40, 3) == {}
  dp = train_loop.TrainConfig(root_dir='x', rounds=3, clients_per_round=4,
                              dp_noise_multiplier=1.2)
  got = train_loop.privacy_metrics(dp, 40, 3)
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(dp_accounting.PoissonSampledDpEvent(
      0.1, dp_accounting.GaussianDpEvent(1.2)), 3)
  assert got['privacy/delta'] == 1 / 40
  assert got['privacy/epsilon'] == pytest.approx(
      accountant.get_epsilon(1 / 40), rel=1e-9)
  with_delta = train_loop.TrainConfig(root_dir='x', rounds=3,
                                      clients_per_round=4,
                                      dp_noise_multiplier=1.2, dp_delta=1e-5)
  assert train_loop.privacy_metrics(with_delta, 40, 3)['privacy/delta'] == 1e-5
  with pytest.raises(ValueError, match='dp_delta'):
    train_loop.TrainConfig(root_dir='x', rounds=3, clients_per_round=4,
                           dp_delta=1e-5)
