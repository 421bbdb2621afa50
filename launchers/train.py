r"""Trains FedDST or a baseline on a federated dataset (Bibikar et al., AAAI 2022).

With no flags it runs a demo of about 40 s on 2 CPU cores: FedDST
(S=0.8) on scikit-learn's embedded 8x8 digits, 20 clients (Dirichlet β=0.1),
5 per round, 40 rounds, written to /tmp/tff_feddst-<user>/digits/feddst:

  uv run python launchers/train.py

The federated settings default to the paper's (β=0.1, 10 local epochs,
batch 32, SGD lr 0.01 momentum 0.9, L2 1e-3, S=0.8, α=0.05, R_adj=10). The
size of the run depends on the dataset: on the small embedded datasets
(digits, synthetic) `--total_clients 20 --clients_per_round 5 --rounds 40
--rounds_between_readjustments 3 --eval_every 4`; on the paper's datasets
`--total_clients 400 --clients_per_round 20 --rounds 400
--rounds_between_readjustments 10 --eval_every 10` (the reference's
defaults). Any of these flags, when given, wins. For example, the paper's
MNIST run:

  uv run python launchers/train.py --dataset mnist --data_dir ~/data/mnist

Restarting with the same --root_dir resumes from the latest checkpoint;
changing a hyperparameter that alters the results is refused (see
tff_feddst/program/hparams.py for the options that may change).
"""

from __future__ import annotations

import os

import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tff_feddst import quiet  # pylint: disable=g-import-not-at-top,wrong-import-position

quiet.exit_quietly_on_interrupt('train.py')  # Until the run takes over.
_TF_LOG_LEVEL = quiet.silence_from_argv()  # Before TensorFlow is imported.

# pylint: disable=g-import-not-at-top,wrong-import-position
import getpass
import re
import tempfile

from absl import app
from absl import flags
from absl import logging

from tff_feddst import choices
from tff_feddst.algorithms import registry
from tff_feddst.data import catalog  # TF-free, like interrupts and run_lock.
from tff_feddst.data import presence
from tff_feddst.data import sources
from tff_feddst.program import interrupts
from tff_feddst.program import run_lock
# pylint: enable=g-import-not-at-top,wrong-import-position

# TensorFlow and the modules that use it (`tf`, `data_lib`, `models_lib`,
# `program`, `runtime`) are imported by main() once the flags are parsed, so
# that --help and a refused flag answer at once, not after ~10 s of imports.
# Code that imports this module gets them as attributes.
_TF_MODULES = ('tf', 'data_lib', 'models_lib', 'program', 'runtime')


def _import_tf_modules() -> None:
  """Imports TensorFlow, then the modules that use it, as module globals."""
  # pylint: disable=global-statement,g-import-not-at-top,redefined-outer-name
  global tf, data_lib, models_lib, program, runtime
  from tff_feddst import tf_import
  tf = tf_import.import_tensorflow()  # First: safe inside absl's main().
  from tff_feddst import data as data_lib
  from tff_feddst import models as models_lib
  from tff_feddst import program
  from tff_feddst import runtime


def __getattr__(name: str):
  """`launcher.program` etc. for tests that import this module."""
  if name in _TF_MODULES:
    _import_tf_modules()
    return globals()[name]
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


# The library's names, from its TF-free modules.
PARTITIONS = choices.PARTITIONS
MODELS = choices.MODELS
DATASETS = catalog.DATASETS
SIZE_DEFAULTS = catalog.SIZE_DEFAULTS


def _size_help(name: str) -> str:
  return (f'default {SIZE_DEFAULTS["demo"][name]} for '
          f'{"/".join(catalog.DEMO)}, {SIZE_DEFAULTS["paper"][name]} '
          'otherwise')


# Algorithm and its hyperparameters (tff_feddst/algorithms/registry.py).
flags.DEFINE_enum('algorithm', 'feddst', tuple(registry.ALGORITHMS),
                  ' '.join(f'{a.name}: {a.summary}'
                           for a in registry.ALGORITHMS.values()))


def _define_option(option: registry.Option) -> None:
  """A flag for a registry option; None = the algorithm's default."""
  users = [a.name for a in registry.ALGORITHMS.values()
           if option.name in a.takes]
  own = {a.name: a.defaults[option.name] for a in registry.ALGORITHMS.values()
         if option.name in a.defaults}
  text = option.help
  if option.name in SIZE_DEFAULTS['demo']:
    text += f' {_size_help(option.name)}.'
  elif not callable(option.default) and option.default is not None:
    text += f' Default {option.default}' + ''.join(
        f', {v} for {a}' for a, v in own.items()) + '.'
  if len(users) < len(registry.ALGORITHMS):
    text += f' For --algorithm {"|".join(users)}.'
  if option.type is bool:
    flags.DEFINE_bool(option.name, None, text)
  elif option.choices is not None:
    flags.DEFINE_enum(option.name, None, option.choices, text)
  elif option.type is float:
    flags.DEFINE_float(option.name, None, text)
  elif option.type is str:
    flags.DEFINE_string(option.name, None, text)
  else:
    flags.DEFINE_integer(option.name, None, text)


for _option in registry.OPTIONS.values():
  _define_option(_option)
# Data and model.
flags.DEFINE_enum('dataset', 'digits', DATASETS,
                  'digits and synthetic are embedded (no files); tfrecord '
                  'reads your own clients from --data_dir (written like '
                  'launchers/write_tfrecords.py does); the others are read '
                  'from --data_dir or the usual cache places.')
flags.DEFINE_string('data_dir', None, 'Directory holding the dataset files '
                    '(for emnist: the directory of emnist_all.sqlite, default '
                    '~/.tff).')
flags.DEFINE_enum('model', None, MODELS,
                  'Default by dataset: ' + ', '.join(
                      f'{d}->{m}' for d, m in catalog.DEFAULT_MODELS.items())
                  + '.')
flags.DEFINE_enum('partition', 'dirichlet', PARTITIONS,
                  'How examples are split over clients (not for emnist, '
                  'whose clients are the writers).')
flags.DEFINE_float('beta', 0.1, 'Dirichlet concentration β > 0 (smaller is '
                   'more heterogeneous).')
flags.DEFINE_integer('classes_per_client', 2, 'Classes per client for the '
                     'k_class partition.', lower_bound=1)
flags.DEFINE_integer('min_examples', 0, 'Drop clients with fewer train '
                     'examples.', lower_bound=0)
flags.DEFINE_integer('total_clients', None,
                     f'Clients to split the data over; '
                     f'{_size_help("total_clients")}. For emnist: use the '
                     'first N writers (default all).', lower_bound=1)
# Federated training.
flags.DEFINE_integer('clients_per_round', None,
                     f'{_size_help("clients_per_round")}.', lower_bound=1)
flags.DEFINE_integer('rounds', None, f'{_size_help("rounds")}.', lower_bound=1)
flags.DEFINE_integer('batch_size', 32, 'Client batch size.', lower_bound=1)
flags.DEFINE_integer('seed', 0, 'Seeds the partition, the initial model, '
                     'client sampling and data order.', lower_bound=0)
# Program.
flags.DEFINE_string('root_dir', None, 'Run directory (checkpoints/, results/, '
                    'logdir/, hparams.json); default '
                    '/tmp/tff_feddst-<user>/<dataset>/<algorithm>. Restarting with '
                    'the same directory resumes.')
flags.DEFINE_integer('eval_every', None, f'Evaluate every N rounds (and at '
                     f'the last round); {_size_help("eval_every")}.',
                     lower_bound=1)
flags.DEFINE_integer('checkpoint_every', 10, 'Checkpoint every N rounds (and '
                     'at the last round).', lower_bound=1)
flags.DEFINE_float('upload_cap_mb', None, 'Stop after the first round whose '
                   'cumulative uplink reaches this many MB (10**6 bytes), '
                   'or after --rounds, whichever comes first.')
flags.DEFINE_string('init_from', None,
                    'Start from a trained model (a SavedModel directory or a '
                    '.keras/.h5 file with the architecture of --model): its '
                    'weights, magnitude-pruned to the initial masks.')
flags.DEFINE_list('workers', [], 'TFF workers as host:port,host:port; '
                  'default: one local worker.')

quiet.define_flag()
FLAGS = flags.FLAGS


def _register_validators() -> None:
  """Flag checks that absl runs at parse time, before any work."""
  for name in ('beta', 'upload_cap_mb'):
    flags.register_validator(
        name, lambda v: v is None or v > 0, message=f'--{name} must be > 0.')
  flags.register_validator(
      'workers',
      lambda v: all(re.fullmatch(r'[^\s:]+:\d{1,5}', w) for w in v),
      message='--workers must be a comma-separated list of host:port.')

  @flags.multi_flags_validator(
      ['dataset', 'data_dir'],
      message='--dataset=tfrecord needs --data_dir (the directory written by '
              'launchers/write_tfrecords.py: feature_spec.json, train/, '
              'test/).')
  def _tfrecord(values):  # pylint: disable=unused-variable
    return values['dataset'] != 'tfrecord' or bool(values['data_dir'])

  @flags.multi_flags_validator(['clients_per_round', 'total_clients',
                                'dataset'])
  def _clients(values):  # pylint: disable=unused-variable
    size = catalog.size(values['dataset'])
    per_round = values['clients_per_round'] or SIZE_DEFAULTS[size][
        'clients_per_round']
    total = values['total_clients']
    given = total is not None
    if total is None and values['dataset'] not in catalog.FEDERATED:
      total = SIZE_DEFAULTS[size]['total_clients']
    if total is not None and per_round > total:
      raise flags.ValidationError(
          f'--clients_per_round={per_round} exceeds --total_clients={total}'
          + ('' if given else f' (the default for --dataset='
             f'{values["dataset"]})') + '.')
    return True

  @flags.multi_flags_validator(['dp_noise_multiplier', 'dp_adaptive_quantile',
                                'dp_clip_norm', 'clients_per_round',
                                'dataset'])
  def _adaptive_dp(values):  # pylint: disable=unused-variable
    # TFF's gaussian_adaptive gives the clip estimate noise 0.05 m and needs
    # z < 2 * 0.05 m (privacy.aggregator.DPConfig says why).
    z = values['dp_noise_multiplier']
    per_round = values['clients_per_round'] or SIZE_DEFAULTS[
        catalog.size(values['dataset'])]['clients_per_round']
    adaptive = (values['dp_adaptive_quantile'] is not None and
                values['dp_clip_norm'] is None)
    if z is not None and adaptive and z >= 0.1 * per_round:
      raise flags.ValidationError(
          f'--dp_noise_multiplier={z} needs more than {z / 0.1:g} '
          f'--clients_per_round (has {per_round}) with '
          '--dp_adaptive_quantile: the clip estimate takes its share of the '
          'privacy budget; or clip at a fixed --dp_clip_norm.')
    return True

  @flags.multi_flags_validator(['algorithm', 'dataset', 'rounds',
                                *registry.OPTIONS])
  def _algorithm(values):  # pylint: disable=unused-variable
    try:
      algorithm_hparams(values)
    except registry.OptionError as e:
      raise flags.ValidationError(str(e)) from e
    return True


def algorithm_hparams(values) -> dict:
  """The algorithm's hyperparameters from flag values (`registry.resolve`)."""
  size = SIZE_DEFAULTS[catalog.size(values['dataset'])]
  return registry.resolve(
      values['algorithm'], {n: values[n] for n in registry.OPTIONS},
      rounds=values['rounds'] or size['rounds'], size_defaults=size,
      flag_prefix='--')


_register_validators()


def resolve_hparams() -> dict:
  """The run's effective hyperparameters (defaults filled; None if unused)."""
  size = SIZE_DEFAULTS[catalog.size(FLAGS.dataset)]

  def sized(name):
    value = getattr(FLAGS, name)
    return size[name] if value is None else value

  rounds = sized('rounds')
  emnist = FLAGS.dataset in catalog.FEDERATED  # Clients are given.
  hp = dict(
      algorithm=FLAGS.algorithm,
      dataset=FLAGS.dataset,
      data_dir=FLAGS.data_dir,
      model=FLAGS.model or _default_model(),
      partition=None if emnist else FLAGS.partition,
      beta=FLAGS.beta if FLAGS.partition == 'dirichlet' and not emnist else None,
      classes_per_client=(FLAGS.classes_per_client
                          if FLAGS.partition == 'k_class' and not emnist
                          else None),
      min_examples=FLAGS.min_examples,
      total_clients=(FLAGS.total_clients if emnist else sized('total_clients')),
      clients_per_round=sized('clients_per_round'),
      rounds=rounds,
      batch_size=FLAGS.batch_size,
      seed=FLAGS.seed,
      init_from=FLAGS.init_from,
      workers=list(FLAGS.workers),
  )
  hp.update(algorithm_hparams(
      {name: getattr(FLAGS, name) for name in
       ('algorithm', 'dataset', 'rounds', *registry.OPTIONS)}))
  return hp


def default_root_dir() -> str:
  """Per user, so that two users of one machine never share a run."""
  return os.path.join(tempfile.gettempdir(), f'tff_feddst-{getpass.getuser()}')


def _default_model() -> str:
  try:
    return catalog.default_model(FLAGS.dataset, FLAGS.data_dir)
  except ValueError as e:
    sys.exit(f'train.py: error: --dataset=tfrecord needs --model ({e}).')


def load_federated_data(hp: dict) -> data_lib.FederatedData:
  """Loads and partitions the dataset named in `hp`."""
  return catalog.load_federated(
      hp['dataset'], hp['data_dir'], partition=hp['partition'],
      beta=hp['beta'], total_clients=hp['total_clients'],
      classes_per_client=hp['classes_per_client'],
      min_examples=hp['min_examples'], seed=hp['seed'])


def build_process(hp: dict, model_fn, loss_fn, input_spec, *,
                  initial_weights=None, initial_client_data=None):
  """The learning process that `hp` describes (`registry.build`)."""
  return registry.build(
      hp, model_fn, loss_fn=loss_fn, input_spec=input_spec,
      metrics_fn=lambda: [tf.keras.metrics.SparseCategoricalAccuracy()],
      seed=hp['seed'], initial_weights=initial_weights,
      initial_client_data=initial_client_data)


def loss_fn() -> tf.keras.losses.Loss:
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def main(argv):
  quiet.filter_library_logs(_TF_LOG_LEVEL)
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  hp = resolve_hparams()  # TF-free: a missing --model default exits at once.
  try:  # Missing files are refused before TensorFlow loads, nothing written.
    presence.check(hp['dataset'], hp['data_dir'])
  except (sources.DatasetNotFoundError, sources.CorruptDatasetError) as e:
    sys.exit(f'train.py: error: {e}')
  root_dir = FLAGS.root_dir or os.path.join(
      default_root_dir(), hp['dataset'], hp['algorithm'])
  # Ctrl-C and SIGTERM end the run with one line saying how to resume, and
  # `program.train` lets them land only between its writes.
  try:
    with interrupts.signals_raise():
      # Held before TensorFlow loads (~10 s), so that a second run on the
      # directory is refused at once.
      with run_lock.hold_run_directory(root_dir):
        result = _train(hp, root_dir)
  except interrupts.Interrupted as e:  # Outside the rounds: nothing to lose.
    if not os.path.exists(root_dir):  # Released empty: e.g. inside the import.
      _exit_now(quiet.interrupted_while_starting('train.py', e.signal_name),
                e.exit_code)
    _exit_now(f'Interrupted ({e.signal_name}) — run the same command to '
              'continue.', e.exit_code)
  except run_lock.RunDirectoryInUseError as e:
    sys.exit(f'train.py: error: {e}')
  final = result.metrics
  summary = (f'test acc {final["test/accuracy"]:.4f}, client mean '
             f'{final["test/client_mean_accuracy"]:.4f}, ' if
             'test/accuracy' in final else '')
  logging.info('Done: %d rounds, %sresults in %s', result.rounds_completed,
               summary, root_dir)


def _train(hp: dict, root_dir: str) -> program.TrainResult:
  """Imports TensorFlow and trains (the run directory held); a cut round or
  a refused run ends the process with one line."""
  _import_tf_modules()
  tf.get_logger().setLevel('WARNING')  # absl already logs TF's INFO lines.
  config = program.TrainConfig(
      root_dir=root_dir, rounds=hp['rounds'],
      clients_per_round=hp['clients_per_round'], batch_size=hp['batch_size'],
      seed=hp['seed'], eval_every=(FLAGS.eval_every or SIZE_DEFAULTS[
          catalog.size(hp['dataset'])]['eval_every']),
      checkpoint_every=FLAGS.checkpoint_every,
      upload_cap_mb=FLAGS.upload_cap_mb,
      dp_noise_multiplier=hp['dp_noise_multiplier'], dp_delta=hp['dp_delta'],
      client_density_budgets=hp['client_density_budgets'])
  try:
    return _run(hp, config)
  except program.TrainingInterrupted as e:
    _exit_now(e.explain('run the same command'), e.exit_code)
  except (program.HparamsMismatchError, program.NoUsableCheckpointError,
          runtime.WorkerUnavailableError, data_lib.DatasetNotFoundError,
          data_lib.CorruptDatasetError) as e:
    sys.exit(f'train.py: error: {e}')


def _run(hp: dict, config: program.TrainConfig) -> program.TrainResult:
  """Loads the data, builds the process and trains it (the directory held)."""
  program.check_hparams(config.root_dir, program.run_hparams(config, hp))
  federated = load_federated_data(hp)
  if hp['clients_per_round'] > len(federated.client_ids):
    sys.exit(f'train.py: error: --clients_per_round={hp["clients_per_round"]} '
             f'exceeds the {len(federated.client_ids)} clients kept after '
             f'partitioning (--total_clients, --min_examples).')
  logging.info('Run %s: %s', config.root_dir, hp)

  model_fn = models_lib.get_model_fn(hp['model'], federated.input_shape,
                                     federated.num_classes)
  try:
    model_fn()
  except ValueError as e:
    sys.exit(f'train.py: error: --model={hp["model"]} does not fit '
             f'{hp["dataset"]} inputs of shape {federated.input_shape}: {e}')
  initial_weights = None
  if hp['init_from']:
    try:
      initial_weights = models_lib.load_keras_model(hp['init_from'])
      models_lib.copy_weights(model_fn(), initial_weights)  # Fits --model?
    except (OSError, models_lib.IncompatibleModelError) as e:
      sys.exit(f'train.py: error: --init_from={hp["init_from"]}: {e}')
  try:
    tff_runtime = runtime.ensure_runtime(hp['workers'])
    process = build_process(
        hp, model_fn, loss_fn,
        program.batch_input_spec(federated, hp['batch_size']),
        initial_weights=initial_weights,
        initial_client_data=program.initial_client_dataset(
            federated, hp['batch_size'], seed=hp['seed']))
    result = program.train(process, federated, config, model_fn=model_fn,
                           loss_fn=loss_fn, hparams=hp,
                           tff_runtime=tff_runtime)
  except program.Interrupted:
    raise  # The worker ends with the process, which ends at once (_exit_now).
  except BaseException:
    runtime.shutdown()
    raise
  runtime.shutdown()
  return result


def _exit_now(line: str, exit_code: int) -> None:
  """Prints `line` and ends the process at once, with `exit_code`.

  A round cut short by the signal may still be running in TFF's executor
  thread. Stopping its worker first makes that thread log gRPC retries, and
  a normal interpreter exit tears the thread down mid-call (seen: an abort,
  exit status -6). Nothing needs the exit's clean-up: the loop wrote its
  files entirely (signals wait for its writes, TensorBoard is flushed), the
  local worker dies with this process (`runtime`: PR_SET_PDEATHSIG) and the
  OS releases the run directory's lock.
  """
  logging.flush()
  sys.stdout.flush()
  print(line, file=sys.stderr, flush=True)
  os._exit(exit_code)  # pylint: disable=protected-access


if __name__ == '__main__':
  app.run(main, flags_parser=quiet.parse_flags_with_suggestions)
