"""The launchers' datasets: their names, kinds, defaults, and one loader.

Kept free of TensorFlow (`load_federated` and `load_central_test` import it
when called), so that the launchers offer the names in `--help` and refuse a
flag before TensorFlow loads; every launcher reads them here, so that none
can offer a dataset another cannot load.
"""

from __future__ import annotations

import json
import os

from tff_feddst.data import presence
from tff_feddst.data import sources

# Datasets whose clients are given on disk, not partitioned by us.
FEDERATED = ('emnist', 'tfrecord')
# Read from their published files (launchers/write_tfrecords.py's choices).
BUNDLED = sources.DATASET_NAMES + ('emnist',)
DATASETS = sources.DATASET_NAMES + FEDERATED
# Embedded in the repository: small enough for a demo run.
DEMO = ('digits', 'synthetic')
DEFAULT_MODELS = {
    'digits': 'digits_cnn', 'synthetic': 'mnist_cnn', 'mnist': 'mnist_cnn',
    'fashion_mnist': 'mnist_cnn', 'cifar10': 'cifar_cnn',
    'cifar100': 'cifar_cnn', 'emnist': 'femnist_cnn',
}
# The model for --dataset=tfrecord, by the input shape in its spec.
MODEL_BY_SHAPE = {(8, 8, 1): 'digits_cnn', (28, 28, 1): 'mnist_cnn',
                  (32, 32, 3): 'cifar_cnn'}
# Run-size defaults: the demo datasets get a ~1 minute run, the others the
# reference's settings.
SIZE_DEFAULTS = {
    'demo': dict(total_clients=20, clients_per_round=5, rounds=40,
                 rounds_between_readjustments=3, eval_every=4),
    'paper': dict(total_clients=400, clients_per_round=20, rounds=400,
                  rounds_between_readjustments=10, eval_every=10),
}


def size(dataset: str) -> str:
  """'demo' or 'paper': which `SIZE_DEFAULTS` a run on `dataset` takes."""
  return 'demo' if dataset in DEMO else 'paper'


def default_total_clients(dataset: str) -> int | None:
  """Clients to partition `dataset` over; None (all) if they are given."""
  if dataset in FEDERATED:
    return None
  return SIZE_DEFAULTS[size(dataset)]['total_clients']


def default_model(dataset: str, data_dir: str | os.PathLike | None) -> str:
  """The model for `dataset`; a TFRecord spec's by its input shape.

  Raises ValueError when a TFRecord spec's shape has no default model.
  """
  if dataset != 'tfrecord':
    return DEFAULT_MODELS[dataset]
  spec_path = os.path.join(data_dir, presence.SPEC_FILENAME)
  try:
    with open(spec_path, encoding='utf-8') as f:
      shape = tuple(json.load(f)['input_shape'])
  except (OSError, ValueError, KeyError, TypeError):
    shape = None  # load_tfrecord names what is wrong with the spec.
  if shape not in MODEL_BY_SHAPE:
    raise ValueError(f'no default for inputs of shape {shape} in {spec_path}')
  return MODEL_BY_SHAPE[shape]


def load_federated(dataset: str, data_dir: str | os.PathLike | None, *,
                   partition: str | None = 'dirichlet',
                   beta: float | None = None,
                   total_clients: int | None = None,
                   classes_per_client: int | None = None,
                   min_examples: int = 0, seed: int = 0):
  """`dataset`'s clients: given ones (the first `total_clients`, if set) or a
  seeded partition (None arguments take their defaults)."""
  from tff_feddst import data as data_lib  # pylint: disable=g-import-not-at-top
  if dataset in FEDERATED:
    load = (data_lib.load_tfrecord if dataset == 'tfrecord' else
            data_lib.load_emnist)
    federated = load(data_dir, min_examples=min_examples)
    if total_clients is not None:
      federated = data_lib.first_clients(federated, total_clients)
    return federated
  return data_lib.build_federated_data(
      data_lib.load(dataset, data_dir), partition=partition,
      num_clients=total_clients or default_total_clients(dataset),
      beta=beta if beta is not None else 0.1,
      classes_per_client=classes_per_client or 2, min_examples=min_examples,
      seed=seed)


def load_central_test(dataset: str, data_dir: str | os.PathLike | None, *,
                      min_examples: int = 0) -> tuple:
  """(test images, input shape, number of classes) of `dataset`, without
  partitioning a centralized one."""
  from tff_feddst import data as data_lib  # pylint: disable=g-import-not-at-top
  if dataset in FEDERATED:
    federated = load_federated(dataset, data_dir, min_examples=min_examples)
    return (federated.central_test[0], federated.input_shape,
            federated.num_classes)
  centralized = data_lib.load(dataset, data_dir)
  return centralized.x_test, centralized.input_shape, centralized.num_classes
