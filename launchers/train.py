r"""Trains FedDST or a baseline on a federated dataset (Bibikar et al., AAAI 2022).

With no flags it runs a demo of about a minute on 2 CPU cores: FedDST
(S=0.8) on scikit-learn's embedded 8x8 digits, 20 clients (Dirichlet β=0.1),
5 per round, 40 rounds, written to /tmp/tff_feddst/digits/feddst:

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

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses
import re
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import data as data_lib
from tff_feddst import models as models_lib
from tff_feddst import program
from tff_feddst import runtime
from tff_feddst import sparsity as sparsity_lib
# pylint: enable=g-import-not-at-top,wrong-import-position


ALGORITHMS = ('feddst', 'fedavg', 'fedavgm', 'fedprox', 'random_mask',
              'feddst_prox', 'feddst_consensus')
_SPARSE = ('feddst', 'random_mask', 'feddst_prox', 'feddst_consensus')
_READJUSTING = ('feddst', 'feddst_prox', 'feddst_consensus')
_PROX = ('fedprox', 'feddst_prox')
DATASETS = tuple(data_lib.DATASET_NAMES) + ('emnist',)
_DEMO_DATASETS = ('digits', 'synthetic')
DEFAULT_MODELS = {
    'digits': 'digits_cnn', 'synthetic': 'mnist_cnn', 'mnist': 'mnist_cnn',
    'fashion_mnist': 'mnist_cnn', 'cifar10': 'cifar_cnn',
    'cifar100': 'cifar_cnn', 'emnist': 'femnist_cnn',
}
# Run-size defaults: the embedded datasets get a ~1 minute demo, the others
# the reference's settings.
SIZE_DEFAULTS = {
    'demo': dict(total_clients=20, clients_per_round=5, rounds=40,
                 rounds_between_readjustments=3, eval_every=4),
    'paper': dict(total_clients=400, clients_per_round=20, rounds=400,
                  rounds_between_readjustments=10, eval_every=10),
}
_DEFAULT_SPARSITY = 0.8
_DEFAULT_READJUSTMENT_RATIO = 0.05
_DEFAULT_PROX_MU = 1.0  # The reference's FedProx examples use mu = 1.
_DEFAULT_FEDAVGM_MOMENTUM = 0.9


def _size_help(name: str) -> str:
  return (f'default {SIZE_DEFAULTS["demo"][name]} for '
          f'{"/".join(_DEMO_DATASETS)}, {SIZE_DEFAULTS["paper"][name]} '
          'otherwise')


# Algorithm.
flags.DEFINE_enum('algorithm', 'feddst', ALGORITHMS,
                  'feddst: FedDST. fedavg: dense FedAvg. fedavgm: FedAvg with '
                  'server momentum. fedprox: FedAvg with a proximal term. '
                  'random_mask: a fixed random-init magnitude mask. '
                  'feddst_prox: FedDST with FedProx clients. '
                  'feddst_consensus: FedDST whose server reserves a share of '
                  'each readjustment for the weights most clients regrew '
                  '(tff_feddst/sparsity/server_masks.py).')
flags.DEFINE_float('sparsity', None,
                   f'S, global sparsity of the prunable kernels, in [0, 1); '
                   f'default {_DEFAULT_SPARSITY} for {", ".join(_SPARSE)}. '
                   'Dense algorithms reject S > 0.')
flags.DEFINE_enum('sparsity_distribution', 'feddst_erk',
                  sparsity_lib.DISTRIBUTIONS, 'How S is spread over layers.')
flags.DEFINE_float('readjustment_ratio', None,
                   f'α, fraction of live weights readjusted, in [0, 1]; '
                   f'default {_DEFAULT_READJUSTMENT_RATIO} for '
                   f'{", ".join(_READJUSTING)}; other algorithms reject α > 0.')
flags.DEFINE_integer('rounds_between_readjustments', None,
                     f'R_adj; {_size_help("rounds_between_readjustments")}.',
                     lower_bound=1)
flags.DEFINE_integer('readjustment_end_round', None,
                     'R_end, no readjustment from this round on; default '
                     'rounds // 2, as the reference.', lower_bound=0)
flags.DEFINE_enum('readjustment_schedule', 'cosine',
                  sparsity_lib.SCHEDULES, 'Decay of α over rounds.')
flags.DEFINE_float('prox_mu', None,
                   f'FedProx μ > 0; default {_DEFAULT_PROX_MU} for '
                   f'{", ".join(_PROX)}; other algorithms reject μ > 0.',
                   lower_bound=0.0)
flags.DEFINE_integer('min_votes', 0, 'Client votes a weight needs to enter '
                     'the union mask.', lower_bound=0)
flags.DEFINE_integer('readjust_after_epoch', None,
                     'k: clients readjust after local epoch k (1 <= k <= '
                     '--client_epochs) and train the remaining epochs on the '
                     'new mask; default: after the last epoch.')
flags.DEFINE_bool('remember_old', False,
                  "Server mask decision counts a client's dropped weights "
                  "with the server's previous values (the reference's "
                  '--remember-old).')
flags.DEFINE_enum('upload_dtype', 'float32', ('float32', 'bfloat16', 'float16'),
                  'Type of the uploaded values (16 bits halve their bytes).')
flags.DEFINE_float('final_sparsity', None,
                   'Target sparsity reached linearly by '
                   '--readjustment_end_round, in [--sparsity, 1); default: '
                   'constant --sparsity.')
# Data and model.
flags.DEFINE_enum('dataset', 'digits', DATASETS,
                  'digits and synthetic are embedded (no files); the others '
                  'are read from --data_dir or the usual cache places.')
flags.DEFINE_string('data_dir', None, 'Directory holding the dataset files '
                    '(for emnist: the directory of emnist_all.sqlite, default '
                    '~/.tff).')
flags.DEFINE_enum('model', None, tuple(models_lib.MODELS),
                  'Default by dataset: ' + ', '.join(
                      f'{d}->{m}' for d, m in DEFAULT_MODELS.items()) + '.')
flags.DEFINE_enum('partition', 'dirichlet', data_lib.PARTITIONS,
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
flags.DEFINE_integer('client_epochs', 10, 'Local epochs per round.',
                     lower_bound=1)
flags.DEFINE_integer('batch_size', 32, 'Client batch size.', lower_bound=1)
flags.DEFINE_float('client_learning_rate', 0.01, 'Client SGD learning rate.')
flags.DEFINE_float('client_momentum', 0.9, 'Client SGD momentum, in [0, 1).')
flags.DEFINE_float('client_weight_decay', 1e-3, 'Client L2 strength λ.',
                   lower_bound=0.0)
flags.DEFINE_float('server_learning_rate', 1.0, 'Server SGD learning rate '
                   '(used when there is a server optimizer).')
flags.DEFINE_float('server_momentum', None,
                   f'Server SGD momentum in [0, 1); default '
                   f'{_DEFAULT_FEDAVGM_MOMENTUM} for fedavgm, 0 otherwise. A '
                   'server optimizer is used for fedavgm, or when the server '
                   'momentum is > 0 or the server learning rate is not 1.')
flags.DEFINE_integer('seed', 0, 'Seeds the partition, the initial model, '
                     'client sampling and data order.', lower_bound=0)
# Program.
flags.DEFINE_string('root_dir', None, 'Run directory (checkpoints/, results/, '
                    'logdir/, hparams.json); default '
                    '/tmp/tff_feddst/<dataset>/<algorithm>. Restarting with '
                    'the same directory resumes.')
flags.DEFINE_integer('eval_every', None, f'Evaluate every N rounds (and at '
                     f'the last round); {_size_help("eval_every")}.',
                     lower_bound=1)
flags.DEFINE_integer('checkpoint_every', 10, 'Checkpoint every N rounds (and '
                     'at the last round).', lower_bound=1)
flags.DEFINE_float('upload_cap_mb', None, 'Stop after the first round whose '
                   'cumulative uplink reaches this many MB (10**6 bytes), '
                   'or after --rounds, whichever comes first.')
flags.DEFINE_list('workers', [], 'TFF workers as host:port,host:port; '
                  'default: one local worker.')

FLAGS = flags.FLAGS


def _register_validators() -> None:
  """Flag checks that absl runs at parse time, before any work."""
  def positive(name):
    flags.register_validator(
        name, lambda v: v is None or v > 0, message=f'--{name} must be > 0.')

  for name in ('beta', 'client_learning_rate', 'server_learning_rate',
               'upload_cap_mb'):
    positive(name)
  flags.register_validator(
      'sparsity', lambda v: v is None or 0.0 <= v < 1.0,
      message='--sparsity must be in [0, 1).')
  flags.register_validator(
      'readjustment_ratio', lambda v: v is None or 0.0 <= v <= 1.0,
      message='--readjustment_ratio must be in [0, 1].')
  for name in ('client_momentum', 'server_momentum'):
    flags.register_validator(
        name, lambda v: v is None or 0.0 <= v < 1.0,
        message=f'--{name} must be in [0, 1).')
  flags.register_validator(
      'workers',
      lambda v: all(re.fullmatch(r'[^\s:]+:\d{1,5}', w) for w in v),
      message='--workers must be a comma-separated list of host:port.')

  @flags.multi_flags_validator(
      ['clients_per_round', 'total_clients', 'dataset'],
      message='--clients_per_round must be <= --total_clients.')
  def _clients(values):  # pylint: disable=unused-variable
    size = _size(values['dataset'])
    per_round = values['clients_per_round'] or SIZE_DEFAULTS[size][
        'clients_per_round']
    total = values['total_clients']
    if total is None and values['dataset'] != 'emnist':
      total = SIZE_DEFAULTS[size]['total_clients']
    return total is None or per_round <= total

  def inapplicable(flag, algorithms, what):
    @flags.multi_flags_validator(
        [flag, 'algorithm'],
        message=f'--{flag} > 0 applies only to --algorithm '
                f'{"|".join(algorithms)} ({what}).')
    def _check(values):  # pylint: disable=unused-variable
      return not values[flag] or values['algorithm'] in algorithms

  inapplicable('sparsity', _SPARSE, 'the others are dense')
  inapplicable('readjustment_ratio', _READJUSTING,
               'the others never readjust masks')
  inapplicable('prox_mu', _PROX, 'the others have no proximal term')
  inapplicable('readjust_after_epoch', _READJUSTING,
               'the others never readjust masks')
  inapplicable('remember_old', _READJUSTING, 'the others never readjust masks')
  inapplicable('final_sparsity', _SPARSE, 'the others are dense')

  @flags.multi_flags_validator(
      ['readjust_after_epoch', 'client_epochs'],
      message='--readjust_after_epoch must be in [1, --client_epochs].')
  def _after_epoch(values):  # pylint: disable=unused-variable
    k = values['readjust_after_epoch']
    return k is None or 1 <= k <= values['client_epochs']

  @flags.multi_flags_validator(
      ['final_sparsity', 'sparsity'],
      message='--final_sparsity must be in [--sparsity, 1) (default '
              f'--sparsity {_DEFAULT_SPARSITY}): the server can only prune '
              'towards it.')
  def _final_sparsity(values):  # pylint: disable=unused-variable
    final = values['final_sparsity']
    start = (values['sparsity'] if values['sparsity'] is not None
             else _DEFAULT_SPARSITY)
    return final is None or start <= final < 1.0

  @flags.multi_flags_validator(
      ['prox_mu', 'algorithm'],
      message=f'--algorithm {"|".join(_PROX)} needs --prox_mu > 0.')
  def _prox(values):  # pylint: disable=unused-variable
    return values['algorithm'] not in _PROX or values['prox_mu'] != 0.0


def _size(dataset: str) -> str:
  return 'demo' if dataset in _DEMO_DATASETS else 'paper'


_register_validators()


def resolve_hparams() -> dict:
  """The run's effective hyperparameters (defaults filled; None if unused)."""
  size = SIZE_DEFAULTS[_size(FLAGS.dataset)]

  def sized(name):
    value = getattr(FLAGS, name)
    return size[name] if value is None else value

  algorithm = FLAGS.algorithm
  sparse = algorithm in _SPARSE
  readjusting = algorithm in _READJUSTING
  rounds = sized('rounds')
  emnist = FLAGS.dataset == 'emnist'
  server_momentum = FLAGS.server_momentum
  if server_momentum is None:
    server_momentum = _DEFAULT_FEDAVGM_MOMENTUM if algorithm == 'fedavgm' else 0.0
  return dict(
      algorithm=algorithm,
      dataset=FLAGS.dataset,
      data_dir=FLAGS.data_dir,
      model=FLAGS.model or DEFAULT_MODELS[FLAGS.dataset],
      partition=None if emnist else FLAGS.partition,
      beta=FLAGS.beta if FLAGS.partition == 'dirichlet' and not emnist else None,
      classes_per_client=(FLAGS.classes_per_client
                          if FLAGS.partition == 'k_class' and not emnist
                          else None),
      min_examples=FLAGS.min_examples,
      total_clients=(FLAGS.total_clients if emnist else sized('total_clients')),
      clients_per_round=sized('clients_per_round'),
      rounds=rounds,
      client_epochs=FLAGS.client_epochs,
      batch_size=FLAGS.batch_size,
      client_learning_rate=FLAGS.client_learning_rate,
      client_momentum=FLAGS.client_momentum,
      client_weight_decay=FLAGS.client_weight_decay,
      server_learning_rate=FLAGS.server_learning_rate,
      server_momentum=server_momentum,
      sparsity=(FLAGS.sparsity if FLAGS.sparsity is not None
                else _DEFAULT_SPARSITY) if sparse else 0.0,
      sparsity_distribution=FLAGS.sparsity_distribution if sparse else None,
      readjustment_ratio=(
          FLAGS.readjustment_ratio if FLAGS.readjustment_ratio is not None
          else _DEFAULT_READJUSTMENT_RATIO) if readjusting else 0.0,
      rounds_between_readjustments=(
          sized('rounds_between_readjustments') if readjusting else None),
      readjustment_end_round=(
          (FLAGS.readjustment_end_round
           if FLAGS.readjustment_end_round is not None else rounds // 2)
          if readjusting else None),
      readjustment_schedule=FLAGS.readjustment_schedule if readjusting else None,
      prox_mu=((FLAGS.prox_mu if FLAGS.prox_mu is not None else
                _DEFAULT_PROX_MU) if algorithm in _PROX else 0.0),
      min_votes=FLAGS.min_votes if sparse else None,
      readjust_after_epoch=(FLAGS.readjust_after_epoch or FLAGS.client_epochs
                            if readjusting else None),
      remember_old=FLAGS.remember_old if readjusting else None,
      upload_dtype=FLAGS.upload_dtype,
      final_sparsity=FLAGS.final_sparsity if sparse else None,
      seed=FLAGS.seed,
      workers=list(FLAGS.workers),
  )


def load_federated_data(hp: dict) -> data_lib.FederatedData:
  """Loads and partitions the dataset named in `hp`."""
  if hp['dataset'] == 'emnist':
    federated = data_lib.load_emnist(hp['data_dir'],
                                     min_examples=hp['min_examples'])
    if hp['total_clients'] is not None:
      federated = _first_clients(federated, hp['total_clients'])
    return federated
  centralized = data_lib.load(hp['dataset'], hp['data_dir'])
  return data_lib.build_federated_data(
      centralized, partition=hp['partition'], num_clients=hp['total_clients'],
      beta=hp['beta'] if hp['beta'] is not None else 0.1,
      classes_per_client=hp['classes_per_client'] or 2,
      min_examples=hp['min_examples'], seed=hp['seed'])


def _first_clients(federated, count: int):
  """`federated` restricted to its first `count` clients (emnist)."""
  ids = federated.client_ids[:count]

  def restrict(client_data):
    return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
        ids, client_data.serializable_dataset_fn)

  return dataclasses.replace(federated, train=restrict(federated.train),
                             test=restrict(federated.test))


def build_process(hp: dict, model_fn, loss_fn, input_spec):
  """The learning process named by `hp['algorithm']`."""
  algorithm = hp['algorithm']
  kwargs = dict(
      loss_fn=loss_fn, input_spec=input_spec,
      metrics_fn=lambda: [tf.keras.metrics.SparseCategoricalAccuracy()],
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(
          hp['client_learning_rate'], momentum=hp['client_momentum']),
      seed=hp['seed'], client_epochs=hp['client_epochs'],
      client_weight_decay=hp['client_weight_decay'])
  if (algorithm == 'fedavgm' or hp['server_momentum'] > 0 or
      hp['server_learning_rate'] != 1.0):
    kwargs['server_optimizer_fn'] = tff.learning.optimizers.build_sgdm(
        hp['server_learning_rate'], momentum=hp['server_momentum'])
  kwargs['upload_dtype'] = hp['upload_dtype']
  if algorithm in _SPARSE:
    kwargs.update(sparsity=hp['sparsity'],
                  sparsity_distribution=hp['sparsity_distribution'],
                  min_votes=hp['min_votes'],
                  final_sparsity=hp['final_sparsity'])
  if algorithm in _READJUSTING:
    kwargs.update(
        readjustment_ratio=hp['readjustment_ratio'],
        rounds_between_readjustments=hp['rounds_between_readjustments'],
        readjustment_end_round=hp['readjustment_end_round'],
        readjustment_schedule=hp['readjustment_schedule'],
        readjust_after_epoch=hp['readjust_after_epoch'],
        remember_old=hp['remember_old'])
  if algorithm == 'feddst_consensus':
    kwargs['consensus_regrowth'] = True
  if algorithm in _PROX:
    kwargs['prox_mu'] = hp['prox_mu']
  builder = {
      'feddst': algorithms.build_weighted_feddst,
      'fedavg': algorithms.build_weighted_fed_avg,
      'fedavgm': algorithms.build_weighted_fed_avgm,
      'fedprox': algorithms.build_weighted_fed_prox,
      'random_mask': algorithms.build_weighted_random_mask,
      'feddst_prox': algorithms.build_weighted_feddst_prox,
      'feddst_consensus': algorithms.build_weighted_feddst,
  }[algorithm]
  return builder(model_fn, **kwargs)


def loss_fn() -> tf.keras.losses.Loss:
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  tf.get_logger().setLevel('WARNING')  # absl already logs TF's INFO lines.
  hp = resolve_hparams()
  root_dir = FLAGS.root_dir or os.path.join(
      '/tmp/tff_feddst', hp['dataset'], hp['algorithm'])
  config = program.TrainConfig(
      root_dir=root_dir, rounds=hp['rounds'],
      clients_per_round=hp['clients_per_round'], batch_size=hp['batch_size'],
      seed=hp['seed'], eval_every=(FLAGS.eval_every or SIZE_DEFAULTS[
          _size(hp['dataset'])]['eval_every']),
      checkpoint_every=FLAGS.checkpoint_every,
      upload_cap_mb=FLAGS.upload_cap_mb)
  # Ctrl-C and SIGTERM end the run with one line saying how to resume, and
  # `program.train` lets them land only between its writes.
  try:
    with program.signals_raise():
      # Held from here, so that a second run is refused before loading data.
      with program.hold_run_directory(root_dir):
        result = _run(hp, config)
  except program.TrainingInterrupted as e:
    print(e.explain('run the same command'), file=sys.stderr)
    sys.exit(e.exit_code)
  except program.Interrupted as e:  # Outside the rounds: nothing to lose.
    print(f'Interrupted ({e.signal_name}) — run the same command to continue.',
          file=sys.stderr)
    sys.exit(e.exit_code)
  except (program.RunDirectoryInUseError, program.HparamsMismatchError,
          program.NoUsableCheckpointError, runtime.WorkerUnavailableError,
          data_lib.DatasetNotFoundError, data_lib.CorruptDatasetError) as e:
    sys.exit(f'train.py: error: {e}')
  final = result.metrics
  summary = (f'test acc {final["test/accuracy"]:.4f}, client mean '
             f'{final["test/client_mean_accuracy"]:.4f}, ' if
             'test/accuracy' in final else '')
  logging.info('Done: %d rounds, %sresults in %s', result.rounds_completed,
               summary, root_dir)


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
  try:
    tff_runtime = runtime.ensure_runtime(hp['workers'])
    process = build_process(hp, model_fn, loss_fn, program.batch_input_spec(
        federated, hp['batch_size']))
    return program.train(process, federated, config, model_fn=model_fn,
                         loss_fn=loss_fn, hparams=hp, tff_runtime=tff_runtime)
  finally:
    runtime.shutdown()


if __name__ == '__main__':
  app.run(main)
