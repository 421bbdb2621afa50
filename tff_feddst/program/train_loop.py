"""The training loop of a FedDST (or baseline) learning process, on `tff.program`.

For each round r = 1, 2, ..., R (rounds are numbered from 1 here; the
process's own `round_num` metric counts from 0):

1. sample `clients_per_round` clients and build their shuffled, batched
   datasets, both pure functions of (seed, r) (`sampling`);
2. run `process.next`;
3. every `eval_every` rounds and at the last round, evaluate the global model
   in plain Keras (`evaluation.Evaluator`);
4. release the flat metrics (`metrics.flatten_metrics` plus `test/...` and
   `time/...`) with key r to `results/metrics.csv` and to TensorBoard
   (`logdir/`), and log one line;
5. every `checkpoint_every` rounds and at the last round, save
   (process state, counters) in `checkpoints/` (tff.program's
   `FileProgramStateManager`, version r).

At the end the global model weights are written to `model_weights.npz`
(`load_model_weights` reads them back).

Resume. A start in a root directory that holds checkpoints continues after the
latest one, with the same clients, data order and process state, so the
results equal those of an uninterrupted run. The CSV release manager drops
every row with a key >= the key it releases, so rounds that ran after the last
checkpoint (and were released, then lost in a crash) are replaced, never
duplicated. TensorBoard event files are append-only: such rounds appear twice
there. `hparams.json` guards against resuming with other hyperparameters
(`hparams`). Only the wall-clock columns (`time/...`) differ from an
uninterrupted run.

Stopping. The run ends after round `rounds`, or, with `upload_cap_mb`, after
the first round whose cumulative uplink (all clients, all rounds, measured on
the encoded payloads; 1 MB = 10**6 bytes) reaches the cap, whichever comes
first. That round is evaluated and checkpointed as the last one.

Worker failures. When `process.next` raises, the runtime's workers are
checked; a dead worker surfaces as `runtime.WorkerUnavailableError` naming it
and the checkpoint to resume from (restart with the same root directory).

Test hook. If the environment variable `TFF_FEDDST_KILL_AFTER_ROUND` is N, the
program SIGKILLs itself right after saving the checkpoint of round N (nothing
happens if round N saves no checkpoint). It exists to test exact resume.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import data as data_lib
from tff_feddst import models as models_lib
from tff_feddst import runtime as runtime_lib
from tff_feddst.program import evaluation
from tff_feddst.program import hparams as hparams_lib
from tff_feddst.program import metrics as metrics_lib
from tff_feddst.program import paths
from tff_feddst.program import sampling

KILL_AFTER_ROUND_ENV = 'TFF_FEDDST_KILL_AFTER_ROUND'
_BYTES_PER_MB = 1e6


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to run a learning process (the algorithm itself is in the process).

  Attributes:
    root_dir: the run's directory (see `paths`); restarting in it resumes.
    rounds: R, the number of rounds.
    clients_per_round: clients sampled (without replacement) per round.
    batch_size: client batch size.
    seed: seeds client sampling and data shuffling.
    eval_every: evaluate every this many rounds (and at the last round).
    checkpoint_every: checkpoint every this many rounds (and at the last).
    keep_checkpoints: how many of the latest checkpoints to keep.
    upload_cap_mb: if set, stop at the first round whose cumulative uplink
      reaches this many MB (10**6 bytes), or after `rounds`.
    shuffle_buffer: client dataset shuffle buffer.
    eval_batch_size: batch size of the in-process Keras evaluation.
  """

  root_dir: str
  rounds: int
  clients_per_round: int
  batch_size: int = 32
  seed: int = 0
  eval_every: int = 10
  checkpoint_every: int = 10
  keep_checkpoints: int = 3
  upload_cap_mb: float | None = None
  shuffle_buffer: int = 1000
  eval_batch_size: int = 1024

  def __post_init__(self):
    checks = [
        (bool(self.root_dir), 'root_dir', 'non-empty'),
        (self.rounds >= 1, 'rounds', '>= 1'),
        (self.clients_per_round >= 1, 'clients_per_round', '>= 1'),
        (self.batch_size >= 1, 'batch_size', '>= 1'),
        (self.seed >= 0, 'seed', '>= 0'),
        (self.eval_every >= 1, 'eval_every', '>= 1'),
        (self.checkpoint_every >= 1, 'checkpoint_every', '>= 1'),
        (self.keep_checkpoints >= 1, 'keep_checkpoints', '>= 1'),
        (self.upload_cap_mb is None or self.upload_cap_mb > 0,
         'upload_cap_mb', '> 0 (or None)'),
        (self.shuffle_buffer >= 0, 'shuffle_buffer', '>= 0'),
        (self.eval_batch_size >= 1, 'eval_batch_size', '>= 1'),
    ]
    for ok, name, expected in checks:
      if not ok:
        raise ValueError(f'TrainConfig.{name} must be {expected}, got '
                         f'{getattr(self, name)!r}.')


class TrainResult(NamedTuple):
  """The end of `train`: the process state after `rounds_completed` rounds."""

  state: Any
  rounds_completed: int
  metrics: dict[str, int | float]  # Those of the last round run by this call.
  stopped_by_upload_cap: bool


def run_hparams(config: TrainConfig,
                hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """What `train` records in hparams.json: `config` (but root_dir) + `hparams`."""
  merged = {k: v for k, v in dataclasses.asdict(config).items()
            if k != 'root_dir'}
  for key, value in (hparams or {}).items():
    if key in merged and merged[key] != value:
      raise ValueError(f'hparams[{key!r}] = {value!r} contradicts '
                       f'TrainConfig.{key} = {merged[key]!r}.')
    merged[key] = value
  return merged


def _counters(round_num: int = 0, uplink: int = 0,
              elapsed: float = 0.0) -> collections.OrderedDict:
  """Program counters checkpointed beside the process state."""
  return collections.OrderedDict(
      round=np.int64(round_num), cumulative_uplink_bytes=np.int64(uplink),
      elapsed_seconds=np.float64(elapsed))


def _format_seconds(seconds: float) -> str:
  return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


def kernel_names(model_fn: Callable[[], tf.keras.Model]) -> list[str]:
  """Names of the prunable kernels ('fc1/kernel', ...) in mask order."""
  model = models_lib.make_prunable(model_fn(), log=False)
  names = [p.kernel.name.split(':')[0] for p in models_lib.masked_kernels(model)]
  return names if len(set(names)) == len(names) else []


def save_model_weights(path, weights: tff.learning.models.ModelWeights,
                       round_num: int) -> None:
  """Writes `weights` (and the round they are from) to an .npz, atomically."""
  arrays = {f'trainable_{i:03d}': np.asarray(w)
            for i, w in enumerate(weights.trainable)}
  arrays.update({f'non_trainable_{i:03d}': np.asarray(w)
                 for i, w in enumerate(weights.non_trainable)})
  paths.savez_atomic(path, round=np.int64(round_num), **arrays)


def load_model_weights(root_dir) -> tuple[tff.learning.models.ModelWeights, int]:
  """The final global weights of the run in `root_dir`, and their round."""
  with np.load(paths.RunPaths.of(root_dir).model_weights) as f:
    def ordered(prefix):
      return [f[k] for k in sorted(k for k in f.files if k.startswith(prefix))]
    return (tff.learning.models.ModelWeights(
        ordered('trainable_'), ordered('non_trainable_')), int(f['round']))


def next_or_explain(process: tff.learning.templates.LearningProcess, state,
                    datasets, *, tff_runtime: runtime_lib.Runtime,
                    round_num: int, last_checkpoint: int):
  """`process.next`, turning a failure caused by a dead worker into a clear error."""
  try:
    return process.next(state, datasets)
  except Exception as e:  # pylint: disable=broad-except
    try:
      tff_runtime.check_workers()
    except runtime_lib.WorkerUnavailableError as dead:
      resume = (f'the checkpoint of round {last_checkpoint}' if last_checkpoint
                else 'the start (no checkpoint yet)')
      raise runtime_lib.WorkerUnavailableError(
          f'Round {round_num} failed because a TFF worker is gone: {dead} '
          f'Restart with the same root directory to resume from {resume}.'
      ) from e
    raise


def _maybe_kill_self(round_num: int) -> None:
  """Test hook (see module doc): SIGKILL after the checkpoint of round N."""
  value = os.environ.get(KILL_AFTER_ROUND_ENV)
  if value and int(value) == round_num:
    logging.warning('%s=%s: killing this process (test hook).',
                    KILL_AFTER_ROUND_ENV, value)
    logging.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _log_round(round_num: int, config: TrainConfig, flat: Mapping[str, Any],
               elapsed: float, eta: float) -> None:
  parts = [f'round {round_num}/{config.rounds}',
           f'elapsed {_format_seconds(elapsed)}', f'ETA {_format_seconds(eta)}']
  if 'train/accuracy' in flat:
    parts.append(f'train acc {flat["train/accuracy"]:.4f}')
  if 'test/accuracy' in flat:
    parts.append(f'test acc {flat["test/accuracy"]:.4f} (client mean '
                 f'{flat["test/client_mean_accuracy"]:.4f})')
  uplink = flat.get('round/cumulative_uplink_bytes')
  if uplink is not None:
    parts.append(f'uplink {uplink / _BYTES_PER_MB:.3f} MB')
  logging.info(' | '.join(parts))


def _rounds_left(round_num: int, config: TrainConfig, uplink: int,
                 round_uplink: int) -> int:
  left = config.rounds - round_num
  if config.upload_cap_mb is not None and round_uplink > 0:
    cap = config.upload_cap_mb * _BYTES_PER_MB
    left = min(left, max(0, math.ceil((cap - uplink) / round_uplink)))
  return left


def train(process: tff.learning.templates.LearningProcess,
          federated_data: data_lib.FederatedData, config: TrainConfig, *,
          model_fn: Callable[[], tf.keras.Model], loss_fn: Any,
          hparams: Mapping[str, Any] | None = None,
          tff_runtime: runtime_lib.Runtime | None = None) -> TrainResult:
  """Trains `process` on `federated_data` (see the module doc), resuming if possible.

  Args:
    process: the learning process (e.g. `algorithms.build_weighted_feddst`).
    federated_data: clients' train and test data and the central test set.
    config: rounds, sampling, cadences and the root directory.
    model_fn: the plain Keras model builder the process was built with (for
      evaluation and the density column names).
    loss_fn: the loss (a Keras loss or a no-arg callable returning one).
    hparams: everything else that defines the run (algorithm, sparsity, ...),
      JSON-serializable; recorded with `config` in hparams.json.
    tff_runtime: the runtime whose workers to check on failure; default the
      process-wide one (`runtime.ensure_runtime()`).

  Returns:
    A `TrainResult`.

  Raises:
    hparams.HparamsMismatchError: the root directory holds another run.
    runtime.WorkerUnavailableError: a TFF worker died during a round.
  """
  tff_runtime = tff_runtime or runtime_lib.ensure_runtime()
  num_clients = len(federated_data.client_ids)
  if config.clients_per_round > num_clients:
    raise ValueError(f'clients_per_round={config.clients_per_round} exceeds '
                     f'the {num_clients} clients of {federated_data.name}.')
  run_paths = paths.RunPaths.of(config.root_dir)
  hparams_lib.write_or_check_hparams(run_paths.root,
                                     run_hparams(config, hparams))

  state_manager = tff.program.FileProgramStateManager(
      str(run_paths.checkpoints), keep_total=config.keep_checkpoints,
      keep_first=False)
  template = (process.initialize(), _counters())
  restored, version = asyncio.run(state_manager.load_latest(template))
  state, counters = restored if restored is not None else template
  done_rounds = int(counters['round'])
  uplink = int(counters['cumulative_uplink_bytes'])
  if restored is not None:
    logging.info('Resuming %s after round %d (checkpoint version %d).',
                 run_paths.root, done_rounds, version)
  cap_bytes = (None if config.upload_cap_mb is None
               else config.upload_cap_mb * _BYTES_PER_MB)
  stopped_by_cap = cap_bytes is not None and uplink >= cap_bytes
  flat: dict[str, int | float] = {}

  if done_rounds < config.rounds and not stopped_by_cap:
    releaser = tff.program.GroupingReleaseManager([
        tff.program.CSVFileReleaseManager(str(run_paths.metrics_csv),
                                          key_fieldname='round'),
        tff.program.TensorBoardReleaseManager(str(run_paths.logdir)),
    ])
    evaluator = evaluation.Evaluator(federated_data, model_fn, loss_fn,
                                     batch_size=config.eval_batch_size)
    names = kernel_names(model_fn)
    last_checkpoint = done_rounds if restored is not None else 0
    session_start = time.monotonic()
    elapsed_before = float(counters['elapsed_seconds'])
    first_round = done_rounds + 1
    try:
      for round_num in range(first_round, config.rounds + 1):
        round_start = time.monotonic()
        clients = sampling.sample_clients(
            federated_data.client_ids, config.clients_per_round,
            seed=config.seed, round_num=round_num)
        datasets = sampling.round_datasets(
            federated_data.train, clients, batch_size=config.batch_size,
            seed=config.seed, round_num=round_num,
            shuffle_buffer=config.shuffle_buffer)
        output = next_or_explain(process, state, datasets,
                                 tff_runtime=tff_runtime, round_num=round_num,
                                 last_checkpoint=last_checkpoint)
        state = output.state
        flat = metrics_lib.flatten_metrics(output.metrics, kernel_names=names)
        uplink = int(flat.get('round/cumulative_uplink_bytes', uplink))
        stopped_by_cap = cap_bytes is not None and uplink >= cap_bytes
        last = round_num == config.rounds or stopped_by_cap
        weights = None  # Read from the state at most once per round.
        if round_num % config.eval_every == 0 or last:
          weights = process.get_model_weights(state)
          flat.update(evaluator(weights))
        now = time.monotonic()
        elapsed = elapsed_before + now - session_start
        flat['time/round_seconds'] = now - round_start
        flat['time/elapsed_seconds'] = elapsed
        asyncio.run(releaser.release(flat, key=round_num))
        session_rounds = round_num - first_round + 1
        eta = 0.0 if last else (now - session_start) / session_rounds * (
            _rounds_left(round_num, config, uplink,
                         int(flat.get('round/uplink_bytes', 0))))
        _log_round(round_num, config, flat, elapsed, eta)
        done_rounds = round_num
        if round_num % config.checkpoint_every == 0 or last:
          if weights is None:
            weights = process.get_model_weights(state)
          asyncio.run(state_manager.save(
              (state, _counters(round_num, uplink, elapsed)), round_num))
          # The latest checkpoint's weights, readable without the process (export).
          save_model_weights(run_paths.model_weights, weights, round_num)
          last_checkpoint = round_num
          _maybe_kill_self(round_num)
        if last:
          break
    except runtime_lib.WorkerUnavailableError as e:
      # A dead worker can also surface outside `process.next` (evaluation,
      # reading the weights for a checkpoint).
      if 'Restart with the same root directory' in str(e):
        raise
      resume = (f'the checkpoint of round {last_checkpoint}' if last_checkpoint
                else 'the start (no checkpoint yet)')
      raise runtime_lib.WorkerUnavailableError(
          f'{e} Restart with the same root directory to resume from '
          f'{resume}.') from e
    if stopped_by_cap:
      logging.info('Cumulative uplink %.3f MB reached upload_cap_mb=%g after '
                   'round %d.', uplink / _BYTES_PER_MB, config.upload_cap_mb,
                   done_rounds)
  else:
    logging.info('%s is already complete (%d rounds); nothing to train.',
                 run_paths.root, done_rounds)
    # The last round always checkpoints; this covers runs from before
    # model_weights.npz existed.
    save_model_weights(run_paths.model_weights,
                       process.get_model_weights(state), done_rounds)
  return TrainResult(state=state, rounds_completed=done_rounds, metrics=flat,
                     stopped_by_upload_cap=stopped_by_cap)
