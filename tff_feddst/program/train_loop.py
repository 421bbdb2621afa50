"""The training loop of a FedDST (or baseline) learning process, on `tff.program`.

For each round r = 1, 2, ..., R (rounds are numbered from 1 here; the
process's own `round_num` metric counts from 0):

1. sample `clients_per_round` clients and build their shuffled, batched
   datasets, both pure functions of (seed, r) (`sampling`);
2. run `process.next`;
3. every `eval_every` rounds and at the last round, evaluate the global model
   in plain Keras (`evaluation.Evaluator`);
4. release the flat metrics (`metrics.flatten_metrics` plus `test/...`,
   `time/...` and, for a DP process, `privacy/epsilon`) with key r to
   `results/metrics.csv` and to TensorBoard (`logdir/`), and log one line;
5. every `checkpoint_every` rounds and at the last round, save
   (process state, counters) in `checkpoints/` (tff.program's
   `FileProgramStateManager`, version r).

At the end the global model weights are written to `model_weights.npz`
(`checkpoints.load_model_weights` reads them back).

Resume. A start in a root directory that holds checkpoints continues after the
latest one, with the same clients, data order and process state, so the
results equal those of an uninterrupted run. The CSV release manager drops
every row with a key >= the key it releases, so rounds that ran after the last
checkpoint (and were released, then lost in a crash) are replaced, never
duplicated. TensorBoard event files are append-only: such rounds appear twice
there. `hparams.json` guards against resuming with other hyperparameters
(`hparams`). Only the wall-clock columns (`time/...`) differ from an
uninterrupted run.

Damaged checkpoints: the run resumes from the newest checkpoint that loads
(`checkpoints`).

One run per root directory. `train` holds the directory's lock (`run_lock`)
from start to end; a second run on it is refused with
`run_lock.RunDirectoryInUseError`.

Stopping. The run ends after round `rounds`, or, with `upload_cap_mb`, after
the first round whose cumulative uplink (all clients, all rounds, measured on
the encoded payloads; 1 MB = 10**6 bytes) reaches the cap, whichever comes
first. That round is evaluated and checkpointed as the last one.

Interruptions. Called from the main thread, `train` turns SIGINT and SIGTERM
into `TrainingInterrupted` (which says the round and the checkpoint to resume
from), and holds them back while a release or a checkpoint is being written,
so that each is written entirely or not at all (`interrupts`).

Worker failures. When `process.next` raises, the runtime's workers are
checked; a dead worker surfaces as `runtime.WorkerUnavailableError` naming it
and the checkpoint to resume from (restart with the same root directory).

Checkpoint hook. `after_checkpoint(round_num)` is called right after each
checkpoint is complete; the exact-resume tests kill the process from it.

Why one file of ~600 lines: the loop, its resume, stopping and interruption
rules are one sequence whose order is the guarantee (release, then
checkpoint; the signal held back in between); the pieces that stand alone
live beside it (`checkpoints`, `run_lock`, `interrupts`, `sampling`,
`evaluation`, `metrics`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from absl import logging
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import data as data_lib
from tff_feddst import models as models_lib
from tff_feddst import runtime as runtime_lib
from tff_feddst.privacy import accounting
from tff_feddst.program import checkpoints
from tff_feddst.program import evaluation
from tff_feddst.program import hparams as hparams_lib
from tff_feddst.program import interrupts
from tff_feddst.program import metrics as metrics_lib
from tff_feddst.program import paths
from tff_feddst.program import run_lock
from tff_feddst.program import sampling
from tff_feddst.sparsity import budgets as budgets_lib

_BYTES_PER_MB = metrics_lib.BYTES_PER_MB


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
    dp_noise_multiplier: the process's DP noise multiplier z (None: not a DP
      process); each round then releases `privacy/epsilon` after that many
      rounds at `privacy/delta` (`privacy.accounting`, sampling rate
      clients_per_round / clients in the federation).
    dp_delta: δ of the reported ε; None: 1 / clients in the federation.
    client_density_budgets: the budget list of a process built with
      `client_density_budgets` ('density:fraction,...'; None: none). Each
      client of the federation gets one (`sparsity.budgets.assign`, by
      `seed`), sent with its data every round; evaluation adds, per budget
      group, the mean client accuracy of the global model pruned to that
      budget over the group's clients (`evaluation.Evaluator`).
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
  dp_noise_multiplier: float | None = None
  dp_delta: float | None = None
  client_density_budgets: str | None = None

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
        (self.dp_noise_multiplier is None or self.dp_noise_multiplier >= 0,
         'dp_noise_multiplier', '>= 0 (or None)'),
        (self.dp_delta is None or (self.dp_noise_multiplier is not None and
                                   0 < self.dp_delta < 1),
         'dp_delta', 'in (0, 1), with dp_noise_multiplier (or None)'),
    ]
    for ok, name, expected in checks:
      if not ok:
        raise ValueError(f'TrainConfig.{name} must be {expected}, got '
                         f'{getattr(self, name)!r}.')
    if self.client_density_budgets is not None:
      budgets_lib.parse(self.client_density_budgets,
                        name='TrainConfig.client_density_budgets')

  @property
  def budgets(self) -> tuple[budgets_lib.Budget, ...] | None:
    if self.client_density_budgets is None:
      return None
    return budgets_lib.parse(self.client_density_budgets)


class TrainResult(NamedTuple):
  """The end of `train`: the process state after `rounds_completed` rounds."""

  state: Any
  rounds_completed: int
  metrics: dict[str, int | float]  # Those of the last round run by this call.
  stopped_by_upload_cap: bool


class TrainingInterrupted(interrupts.Interrupted):
  """`train` stopped on SIGINT or SIGTERM, with nothing half-written.

  Attributes:
    where: when the signal came, e.g. 'during round 16' or 'after round 16'
      (that round was released).
    last_checkpoint: the round whose checkpoint a restart in the same root
      directory resumes from; 0 if there is none yet, None if the run was
      interrupted before it had read its checkpoints.
  """

  def __init__(self, signum: int, *, where: str,
               last_checkpoint: int | None):
    self.where = where
    self.last_checkpoint = last_checkpoint
    super().__init__(
        signum, self.explain('train again with the same root directory'))

  def explain(self, how_to_restart: str) -> str:
    """One line: where the run stopped, and that `how_to_restart` resumes it."""
    if self.last_checkpoint is None:
      return f'Interrupted {self.where} — {how_to_restart} to continue.'
    if self.last_checkpoint:
      return (f'Interrupted {self.where}; the last checkpoint is round '
              f'{self.last_checkpoint} — {how_to_restart} to resume.')
    return (f'Interrupted {self.where}; there is no checkpoint yet — '
            f'{how_to_restart} to start again.')


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


def _format_seconds(seconds: float) -> str:
  return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


def kernel_names(model_fn: Callable[[], tf.keras.Model]) -> list[str]:
  """Names of the prunable kernels ('fc1/kernel', ...) in mask order."""
  model = models_lib.make_prunable(model_fn(), log=False)
  names = [p.kernel.name.split(':')[0] for p in models_lib.masked_kernels(model)]
  return names if len(set(names)) == len(names) else []


def next_or_explain(process: tff.learning.templates.LearningProcess, state,
                    datasets, *, tff_runtime: runtime_lib.Runtime | None,
                    round_num: int, last_checkpoint: int):
  """`process.next`, turning a failure caused by a dead worker into a clear
  error (None: the user's own context, whose workers are theirs to check)."""
  try:
    return process.next(state, datasets)
  except Exception as e:  # pylint: disable=broad-except
    if tff_runtime is None:
      raise
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


@dataclasses.dataclass
class _Progress:
  """How far `train` got, for the message of `TrainingInterrupted`."""

  where: str = 'while loading the run'
  last_checkpoint: int | None = None  # None: not known yet.


def train(process: tff.learning.templates.LearningProcess,
          federated_data: data_lib.FederatedData, config: TrainConfig, *,
          model_fn: Callable[[], tf.keras.Model], loss_fn: Any,
          hparams: Mapping[str, Any] | None = None,
          tff_runtime: runtime_lib.Runtime | None = None,
          after_checkpoint: Callable[[int], None] | None = None
          ) -> TrainResult:
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
      library's own runtime, unless the user set a TFF context of their own
      (`runtime.own_default_context()`), which is then left in place.
    after_checkpoint: called with the round number right after each
      checkpoint (process state, counters, model_weights.npz) is complete.

  Returns:
    A `TrainResult`.

  Raises:
    hparams.HparamsMismatchError: the root directory holds another run.
    run_lock.RunDirectoryInUseError: another process is running in it.
    checkpoints.NoUsableCheckpointError: it holds checkpoints, and none loads.
    runtime.WorkerUnavailableError: a TFF worker died during a round.
    TrainingInterrupted: SIGINT or SIGTERM arrived (main thread only).
  """
  tff_runtime = tff_runtime or runtime_lib.own_default_context()
  num_clients = len(federated_data.client_ids)
  if config.clients_per_round > num_clients:
    raise ValueError(f'clients_per_round={config.clients_per_round} exceeds '
                     f'the {num_clients} clients of {federated_data.name}.')
  if config.upload_cap_mb is not None and not _counts_uplink(process):
    raise ValueError(
        f'TrainConfig.upload_cap_mb={config.upload_cap_mb} needs a process '
        "that counts its uplink (state.client_work['cumulative_uplink_bytes'],"
        " as tff_feddst's builders do); this one does not, so the cap could "
        'never stop it.')
  run_paths = paths.RunPaths.of(config.root_dir)
  progress = _Progress()
  try:
    with interrupts.signals_raise(), run_lock.hold_run_directory(
        run_paths.root):
      return _train(process, federated_data, config, run_paths, progress,
                    model_fn=model_fn, loss_fn=loss_fn, hparams=hparams,
                    tff_runtime=tff_runtime,
                    after_checkpoint=after_checkpoint)
  except interrupts.Interrupted as e:
    raise TrainingInterrupted(e.signum, where=progress.where,
                              last_checkpoint=progress.last_checkpoint
                              ) from None


def _train(process, federated_data, config: TrainConfig,
           run_paths: paths.RunPaths, progress: _Progress, *, model_fn,
           loss_fn, hparams, tff_runtime, after_checkpoint) -> TrainResult:
  """`train` once the run directory is held: load, then run the rounds."""
  with interrupts.held():
    hparams_lib.write_or_check_hparams(run_paths.root,
                                       run_hparams(config, hparams))
  state_manager = checkpoints.state_manager(run_paths,
                                            config.keep_checkpoints)
  state, counters = _resume(process, state_manager, run_paths, progress)
  done_rounds = int(counters['round'])
  stopped_by_cap = _cap_reached(config, _cumulative_uplink(state) or 0)
  if done_rounds >= config.rounds or stopped_by_cap:
    logging.info('%s is already complete (%d rounds); nothing to train.',
                 run_paths.root, done_rounds)
    # The last round always checkpoints; this covers runs from before
    # model_weights.npz existed.
    with interrupts.held():
      checkpoints.save_model_weights(run_paths.model_weights,
                         process.get_model_weights(state), done_rounds)
    return TrainResult(state=state, rounds_completed=done_rounds, metrics={},
                       stopped_by_upload_cap=stopped_by_cap)
  assignment = _budget_assignment(process, federated_data, config)
  session = _Session(
      process=process, federated_data=federated_data, config=config,
      run_paths=run_paths, progress=progress, state_manager=state_manager,
      tff_runtime=tff_runtime, after_checkpoint=after_checkpoint,
      evaluator=evaluation.Evaluator(federated_data, model_fn, loss_fn,
                                     batch_size=config.eval_batch_size,
                                     budgets=config.budgets,
                                     assignment=assignment),
      assignment=assignment,
      names=kernel_names(model_fn), first_round=done_rounds + 1,
      elapsed_before=float(counters['elapsed_seconds']))
  try:
    return _run_rounds(session, state)
  except runtime_lib.WorkerUnavailableError as e:
    # A dead worker can also surface outside `process.next` (evaluation,
    # reading the weights for a checkpoint).
    if 'Restart with the same root directory' in str(e):
      raise
    last_checkpoint = progress.last_checkpoint
    resume = (f'the checkpoint of round {last_checkpoint}' if last_checkpoint
              else 'the start (no checkpoint yet)')
    raise runtime_lib.WorkerUnavailableError(
        f'{e} Restart with the same root directory to resume from '
        f'{resume}.') from e


def takes_budgets(process) -> bool:
  """Whether `process` wants client data `<data=B*, budget=float32*>`."""
  member = process.next.type_signature.parameter[1].member
  if not isinstance(member, tff.StructType):
    return False
  return 'budget' in [name for name, _ in tff.structure.iter_elements(member)]


def _budget_assignment(process, federated_data, config: TrainConfig
                       ) -> dict[str, float] | None:
  """{client id: density budget}, or None; refuses a process/config mismatch."""
  budgets = config.budgets
  if takes_budgets(process) != (budgets is not None):
    raise ValueError(
        'The process was built with client_density_budgets but '
        'TrainConfig.client_density_budgets is None' if budgets is None else
        f'TrainConfig.client_density_budgets={config.client_density_budgets!r}'
        ' but the process was built without client_density_budgets')
  if budgets is None:
    return None
  assignment = budgets_lib.assign(budgets, federated_data.client_ids,
                                  seed=config.seed)
  sizes = collections.Counter(assignment.values())
  logging.info('Client density budgets: %s', ', '.join(
      f'{budgets_lib.label(b.density)}: {sizes[b.density]} clients'
      for b in budgets))
  return assignment


def _resume(process, state_manager, run_paths: paths.RunPaths,
            progress: _Progress):
  """(process state, counters) of the newest usable checkpoint, or initial."""
  template = (process.initialize(), checkpoints.counters())
  restored, version, set_aside = checkpoints.restore(state_manager, template,
                                                     run_paths.checkpoints)
  state, counters = restored if restored is not None else template
  done_rounds = int(counters['round'])
  if restored is not None:
    logging.info('Resuming %s after round %d (checkpoint version %d).',
                 run_paths.root, done_rounds, version)
  progress.last_checkpoint = done_rounds
  progress.where = f'before round {done_rounds + 1}'
  if set_aside:
    with interrupts.held():  # The weights of the checkpoint resumed from.
      checkpoints.save_model_weights(run_paths.model_weights,
                         process.get_model_weights(state), done_rounds)
  return state, counters


def _cumulative_uplink(state) -> int | None:
  """The bytes all clients uploaded so far, as the process's state counts them.

  Our client work owns that count (`templates/client_work.py`); the program
  only reads it, from the round's measurements or, on resume, from the state.
  None: the process does not count them (none of ours).
  """
  client_work = getattr(state, 'client_work', None)
  if isinstance(client_work, Mapping) and (
      'cumulative_uplink_bytes' in client_work):
    return int(client_work['cumulative_uplink_bytes'])
  return None


def _counts_uplink(process) -> bool:
  """Whether `process`'s state holds the uplink count (`_cumulative_uplink`)."""
  state_type = process.initialize.type_signature.result
  state_type = getattr(state_type, 'member', state_type)
  client_work = getattr(state_type, 'client_work', None)
  return isinstance(client_work, tff.types.StructType) and (
      'cumulative_uplink_bytes' in [
          name for name, _ in tff.structure.iter_elements(client_work)])


def _cap_reached(config: TrainConfig, uplink: int) -> bool:
  return (config.upload_cap_mb is not None and
          uplink >= config.upload_cap_mb * _BYTES_PER_MB)


@dataclasses.dataclass
class _Session:
  """What the rounds of one `train` call share."""

  process: Any
  federated_data: data_lib.FederatedData
  config: TrainConfig
  run_paths: paths.RunPaths
  progress: _Progress
  state_manager: tff.program.FileProgramStateManager
  tff_runtime: runtime_lib.Runtime | None
  after_checkpoint: Callable[[int], None] | None
  evaluator: evaluation.Evaluator
  names: list[str]
  assignment: dict[str, float] | None
  first_round: int
  elapsed_before: float
  started: float = dataclasses.field(default_factory=time.monotonic)


def _run_rounds(session: _Session, state) -> TrainResult:
  """Rounds `first_round`..`rounds` (or to the upload cap): run → evaluate →
  release → checkpoint."""
  config = session.config
  tensorboard = tff.program.TensorBoardReleaseManager(
      str(session.run_paths.logdir))
  releaser = tff.program.GroupingReleaseManager([
      tff.program.CSVFileReleaseManager(str(session.run_paths.metrics_csv),
                                        key_fieldname='round'),
      tensorboard,
  ])
  flat: dict[str, int | float] = {}
  round_num, stopped_by_cap = session.first_round - 1, False
  for round_num in range(session.first_round, config.rounds + 1):
    interrupts.check()  # A signal whose exception a library swallowed.
    session.progress.where = f'during round {round_num}'
    round_start = time.monotonic()
    state, flat = _run_round(session.process, state, session.federated_data,
                             config, round_num, names=session.names,
                             assignment=session.assignment,
                             tff_runtime=session.tff_runtime,
                             last_checkpoint=session.progress.last_checkpoint)
    flat.update(privacy_metrics(config, len(session.federated_data.client_ids),
                                round_num))
    uplink = int(flat.get('round/cumulative_uplink_bytes', 0))
    stopped_by_cap = _cap_reached(config, uplink)
    last = round_num == config.rounds or stopped_by_cap
    weights = None  # Read from the state at most once per round.
    if round_num % config.eval_every == 0 or last:
      weights = session.process.get_model_weights(state)
      flat.update(session.evaluator(weights))
    now = time.monotonic()
    elapsed = session.elapsed_before + now - session.started
    flat['time/round_seconds'] = now - round_start
    flat['time/elapsed_seconds'] = elapsed
    with interrupts.held():
      asyncio.run(releaser.release(flat, key=round_num))
      _flush(tensorboard)
      session.progress.where = f'after round {round_num}'
    eta = 0.0 if last else (now - session.started) / (
        round_num - session.first_round + 1) * _rounds_left(
            round_num, config, uplink, int(flat.get('round/uplink_bytes', 0)))
    _log_round(round_num, config, flat, elapsed, eta)
    if round_num % config.checkpoint_every == 0 or last:
      _checkpoint(session, state, round_num, elapsed, weights)
    if last:
      break
  if stopped_by_cap:
    logging.info('Cumulative uplink %.3f MB reached upload_cap_mb=%g after '
                 'round %d.', uplink / _BYTES_PER_MB, config.upload_cap_mb,
                 round_num)
  return TrainResult(state=state, rounds_completed=round_num, metrics=flat,
                     stopped_by_upload_cap=stopped_by_cap)


def _checkpoint(session: _Session, state, round_num: int, elapsed: float,
                weights) -> None:
  """Checkpoint `round_num`, then the `after_checkpoint` hook."""
  with interrupts.held():
    checkpoints.save(
        session.state_manager, session.run_paths,
        (state, checkpoints.counters(round_num, elapsed)), round_num,
        session.process.get_model_weights(state) if weights is None
        else weights)
    session.progress.last_checkpoint = round_num
  if session.after_checkpoint is not None:
    session.after_checkpoint(round_num)


def privacy_metrics(config: TrainConfig, num_clients: int,
                    round_num: int) -> dict[str, float]:
  """`privacy/epsilon` after `round_num` rounds and its `privacy/delta`
  (nothing for a process without DP)."""
  if config.dp_noise_multiplier is None:
    return {}
  delta = (config.dp_delta if config.dp_delta is not None else
           accounting.default_delta(num_clients))
  return {
      'privacy/epsilon': accounting.epsilon(
          noise_multiplier=config.dp_noise_multiplier,
          sampling_rate=accounting.sampling_rate(config.clients_per_round,
                                                 num_clients),
          rounds=round_num, delta=delta),
      'privacy/delta': delta,
  }


def _flush(tensorboard: tff.program.TensorBoardReleaseManager) -> None:
  """Writes out the events released so far.

  TF buffers summaries for up to two minutes; a run that is killed, or that
  ends at once on an interruption, would lose those rounds from TensorBoard
  although metrics.csv has them.
  """
  writer = getattr(tensorboard, '_summary_writer', None)  # TFF 0.87's.
  if writer is not None:
    writer.flush()


def _run_round(process, state, federated_data, config: TrainConfig,
               round_num: int, *, names: list[str],
               tff_runtime: runtime_lib.Runtime, last_checkpoint: int,
               assignment: Mapping[str, float] | None = None):
  """Samples the clients of round `round_num` and runs it.

  Returns:
    (the new state, the round's flat metrics).
  """
  clients = sampling.sample_clients(
      federated_data.client_ids, config.clients_per_round, seed=config.seed,
      round_num=round_num)
  datasets = sampling.round_datasets(
      federated_data.train, clients, batch_size=config.batch_size,
      seed=config.seed, round_num=round_num,
      shuffle_buffer=config.shuffle_buffer)
  if assignment is not None:
    datasets = sampling.with_budgets(datasets, clients, assignment)
  output = next_or_explain(process, state, datasets, tff_runtime=tff_runtime,
                           round_num=round_num,
                           last_checkpoint=last_checkpoint)
  return output.state, metrics_lib.flatten_metrics(output.metrics,
                                                   kernel_names=names)
