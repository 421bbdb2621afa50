"""FedDST and FLASH under TFF's own program logic.

  uv run python examples/tff_program.py --root_dir=runs/tff_program
  uv run python examples/tff_program.py --algorithm=flash_spdst \
      --root_dir=runs/tff_program_flash

Trains with `tff.learning.programs.train_model`, as a TFF program would:
* the clients' data come from a `tff.program` data source, the library's
  `program.data_sources.ClientDatasetsSource` (TFF 0.87's `train_model`
  cannot deep-copy `tff.program.DatasetDataSource`'s iterator);
* the program state (process state, round, data iterator) is kept by
  `tff.program.FileProgramStateManager`: kill the program and run the same
  command again, and it resumes from the last saved round;
* training metrics go to CSV and TensorBoard release managers (`train.csv`,
  `tensorboard/train`), the evaluation's likewise; the released model weights
  to a `tff.program.SavedModelFileReleaseManager` (`model_output`);
* an `EvaluationManager` evaluates the sparse model on the clients' test
  data with `tff.learning.algorithms.build_fed_eval`, every
  --eval_every rounds and after the last.

The computations run on the library's own worker (`runtime.Runtime`), seen by
TFF's program logic through `Runtime.program_context()`, a
`tff.program.NativeFederatedContext`. Data: scikit-learn's embedded 8x8
digits, split across --clients clients (Dirichlet β = 0.5).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from tff_feddst.algorithms import registry  # No TensorFlow: flags first.
# pylint: enable=g-import-not-at-top,wrong-import-position

ALGORITHMS = ('feddst', 'flash_spdst', 'flash_jmwst')
_ROOT = flags.DEFINE_string('root_dir', 'runs/tff_program',
                            'Program state, metrics and model output.')
_ALGORITHM = flags.DEFINE_enum('algorithm', 'feddst', ALGORITHMS,
                               'Which algorithm to train.')
_ROUNDS = flags.DEFINE_integer('rounds', 10, 'Training rounds.', lower_bound=1)
_CLIENTS = flags.DEFINE_integer('clients', 10, 'Clients in the federation.',
                                lower_bound=2)
_PER_ROUND = flags.DEFINE_integer('clients_per_round', 4,
                                  'Clients sampled per round.', lower_bound=1)
_EVAL_EVERY = flags.DEFINE_integer('eval_every', 5,
                                   'Rounds between evaluations.',
                                   lower_bound=1)
_SPARSITY = flags.DEFINE_float('sparsity', 0.8, 'Global sparsity S.')
_BUDGETS = flags.DEFINE_string(
    'client_density_budgets', None,
    'Refused here, with the reason: TFF 0.87\'s program context cannot feed '
    'budgeted clients (tff_feddst/program/data_sources.py).')


def main(argv):
  del argv
  root = _ROOT.value
  try:
    hparams = registry.resolve(
        _ALGORITHM.value,
        {'sparsity': _SPARSITY.value, 'client_epochs': 2,
         'client_learning_rate': 0.05,
         'client_density_budgets': _BUDGETS.value},
        rounds=_ROUNDS.value,
        size_defaults={'rounds_between_readjustments': 2}, flag_prefix='--')
  except registry.OptionError as e:
    sys.exit(f'examples/tff_program.py: {e}')
  if hparams['client_density_budgets']:
    # tff_feddst/program/data_sources.py says why.
    sys.exit('examples/tff_program.py: --client_density_budgets cannot run '
             "under TFF 0.87's program logic: budgeted clients take <data, "
             'budget> structs, and tff.program.NativeFederatedContext cannot '
             'pass client data of a struct type. Train budgeted runs with '
             'launchers/train.py.')
  hparams.update(algorithm=_ALGORITHM.value,
                 clients_per_round=_PER_ROUND.value)

  os.makedirs(root, exist_ok=True)
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tensorflow_federated as tff
  from tff_feddst import data
  from tff_feddst import models
  from tff_feddst import runtime
  from tff_feddst.program import data_sources
  # pylint: enable=g-import-not-at-top

  def loss_fn():
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def metrics_fn():
    return [tf.keras.metrics.SparseCategoricalAccuracy()]

  def release_managers(name: str):
    return tff.program.GroupingReleaseManager([
        tff.program.CSVFileReleaseManager(os.path.join(root, f'{name}.csv')),
        tff.program.TensorBoardReleaseManager(
            os.path.join(root, 'tensorboard', name)),
    ])

  owned = runtime.ensure_runtime()
  tff.framework.set_default_context(owned.program_context())

  fed = data.build_federated_data(data.load_digits(), num_clients=_CLIENTS.value,
                                  beta=0.5, seed=0)
  train = [data.preprocess(fed.train.create_tf_dataset_for_client(c),
                           batch_size=16, shuffle_seed=0)
           for c in fed.client_ids]
  test = [data.preprocess(fed.test.create_tf_dataset_for_client(c),
                          batch_size=16, shuffle_buffer=0)
          for c in fed.client_ids]
  model_fn = models.get_model_fn('digits_cnn', fed.input_shape,
                                 fed.num_classes)
  input_spec = train[0].element_spec
  process = registry.build(hparams, model_fn, loss_fn=loss_fn,
                           input_spec=input_spec, metrics_fn=metrics_fn,
                           seed=0)
  train_source = data_sources.ClientDatasetsSource(train)

  eval_model_fn = models.masked_model_fn(
      model_fn, loss_fn=loss_fn, input_spec=input_spec, metrics_fn=metrics_fn)

  def create_process_fn(name):
    del name
    return tff.learning.algorithms.build_fed_eval(eval_model_fn), None

  evaluation_manager = tff.learning.programs.EvaluationManager(
      data_source=data_sources.ClientDatasetsSource(test),
      aggregated_metrics_manager=release_managers('evaluation'),
      create_state_manager_fn=lambda name: tff.program.FileProgramStateManager(
          os.path.join(root, 'evaluation_state', name)),
      create_process_fn=create_process_fn,
      cohort_size=min(_PER_ROUND.value, len(test)),
      duration=datetime.timedelta(0))  # One evaluation round each time.

  asyncio.run(tff.learning.programs.train_model(
      train_process=process,
      train_data_source=train_source,
      train_per_round_clients=_PER_ROUND.value,
      train_total_rounds=_ROUNDS.value,
      program_state_manager=tff.program.FileProgramStateManager(
          os.path.join(root, 'program_state')),
      model_output_manager=tff.program.SavedModelFileReleaseManager(
          os.path.join(root, 'model_output')),
      train_metrics_manager=release_managers('train'),
      evaluation_manager=evaluation_manager,
      evaluation_periodicity=_EVAL_EVERY.value))
  print(f'Trained {_ROUNDS.value} rounds of {_ALGORITHM.value}; metrics in '
        f'{root}/train.csv and {root}/evaluation.csv.', flush=True)


if __name__ == '__main__':
  app.run(main)
