r"""Writes a bundled dataset as federated tf.Example TFRecord files.

The clients are the ones launchers/train.py trains on with the same data
flags, so a run with `--dataset=tfrecord --data_dir=OUT` can be checked
against the bundled reader (same seed, same metrics). For the digits demo:

  uv run python launchers/write_tfrecords.py --output_dir /tmp/digits_tfrecord

writes /tmp/digits_tfrecord/{feature_spec.json, train/<client>.tfrecord,
test/<client>.tfrecord, central_test.tfrecord} (the layout read by
tff_feddst.data.load_tfrecord). The directory appears whole or not at all,
and an existing non-empty one is refused.
"""

from __future__ import annotations

import os

import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tff_feddst import quiet  # pylint: disable=g-import-not-at-top,wrong-import-position

_TF_LOG_LEVEL = quiet.silence_from_argv()  # Before TensorFlow is imported.

# pylint: disable=g-import-not-at-top,wrong-import-position
from pathlib import Path

from absl import app
from absl import flags

# TensorFlow and the modules that use it are imported by main(), so that
# --help and a refused flag answer at once, not after ~10 s of imports.
from tff_feddst import choices
from tff_feddst import tf_import
from tff_feddst.data import catalog  # TF-free.
# pylint: enable=g-import-not-at-top,wrong-import-position

# The library's names, from its TF-free modules.
PARTITIONS = choices.PARTITIONS
DATASETS = catalog.BUNDLED
_SIZES = catalog.SIZE_DEFAULTS  # launchers/train.py's.

_OUTPUT = flags.DEFINE_string('output_dir', None, 'Directory to create; must '
                              'not exist or be empty.', required=True)
_DATASET = flags.DEFINE_enum('dataset', 'digits', DATASETS,
                             'Bundled dataset to write.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Directory holding the '
                                'dataset files, as for train.py.')
_PARTITION = flags.DEFINE_enum('partition', 'dirichlet', PARTITIONS,
                               'How examples are split over clients (not '
                               'for emnist).')
_BETA = flags.DEFINE_float('beta', 0.1, 'Dirichlet concentration β > 0.')
_CLASSES = flags.DEFINE_integer('classes_per_client', 2, 'Classes per client '
                                'for the k_class partition.', lower_bound=1)
_MIN_EXAMPLES = flags.DEFINE_integer('min_examples', 0, 'Drop clients with '
                                     'fewer train examples.', lower_bound=0)
_TOTAL = flags.DEFINE_integer(
    'total_clients', None, f'Clients to split the data over; default '
    f'{_SIZES["demo"]["total_clients"]} for {"/".join(catalog.DEMO)}, '
    f'{_SIZES["paper"]["total_clients"]} otherwise. For emnist: the first N '
    'writers (default all).', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Seeds the partition.', lower_bound=0)

flags.register_validator('beta', lambda v: v > 0, message='--beta must be > 0.')


def description(dataset: str, federated: data_lib.FederatedData) -> str:
  """Says in feature_spec.json which flags made the partition."""
  if dataset in catalog.FEDERATED:
    flags_used = ['min_examples', 'total_clients']
  else:
    flags_used = ['partition', 'total_clients', 'min_examples', 'seed']
    flags_used += {'dirichlet': ['beta'], 'k_class': ['classes_per_client'],
                   'iid': []}[_PARTITION.value]
  values = {n: flags.FLAGS[n].value for n in flags_used}
  if values['total_clients'] is None:
    values['total_clients'] = catalog.default_total_clients(dataset)
  settings = ' '.join(f'--{n}={v}' for n, v in values.items()
                      if v is not None)
  return (f'launchers/write_tfrecords.py --dataset={dataset} {settings}: '
          f'{federated.summary}')


quiet.define_flag()


def main(argv):
  quiet.filter_library_logs(_TF_LOG_LEVEL)
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  output = Path(_OUTPUT.value).expanduser()
  if output.exists() and (not output.is_dir() or any(output.iterdir())):
    # Checked before loading: a large dataset takes a while to partition.
    sys.exit(f'write_tfrecords.py: error: {output} exists and is not an '
             'empty directory; remove it or choose another')
  tf_import.import_tensorflow()  # First: safe inside absl's main().
  # pylint: disable=g-import-not-at-top,unused-import
  from tff_feddst import data as data_lib
  # Imported for its exit hook, which lets TFF's import-time context go
  # quietly (otherwise every run ends with "Exception ignored in ... __del__").
  from tff_feddst import runtime
  # pylint: enable=g-import-not-at-top,unused-import
  try:
    federated = catalog.load_federated(
        _DATASET.value, _DATA_DIR.value, partition=_PARTITION.value,
        beta=_BETA.value, total_clients=_TOTAL.value,
        classes_per_client=_CLASSES.value, min_examples=_MIN_EXAMPLES.value,
        seed=_SEED.value)
    data_lib.write_tfrecord(federated, _OUTPUT.value,
                            description=description(_DATASET.value, federated))
  except (data_lib.DatasetNotFoundError, data_lib.CorruptDatasetError,
          FileExistsError, ValueError) as e:
    sys.exit(f'write_tfrecords.py: error: {e}')
  print(f'Wrote {federated.name} ({federated.summary}) to {_OUTPUT.value}; '
        f'train with --dataset=tfrecord --data_dir={_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
