r"""Exports a run's latest global model as SavedModel and sparse TFLite.

  uv run python launchers/export.py --root_dir /tmp/tff_feddst-$USER/digits/feddst

Reads the run's hparams.json (model, dataset) and the weights of its latest
checkpoint (model_weights.npz), strips the TF-MOT wrappers with the masks
applied, writes saved_model/, model_dense.tflite, model_sparse.tflite
(tf.lite.Optimize.EXPERIMENTAL_SPARSITY) and, with --int8,
model_sparse_int8.tflite into --output_dir, checks each on a batch of the
dataset's test images against the in-process model, and prints a size table.
"""

import os

import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tff_feddst import quiet  # pylint: disable=g-import-not-at-top,wrong-import-position

_TF_LOG_LEVEL = quiet.silence_from_argv()  # Before TensorFlow is imported.

# pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app
from absl import flags

# TensorFlow and the modules that use it are imported by main(), so that
# --help and a refused flag answer at once, not after ~10 s of imports.
from tff_feddst import tf_import
from tff_feddst.data import catalog  # TF-free.
# pylint: enable=g-import-not-at-top,wrong-import-position

_ROOT = flags.DEFINE_string('root_dir', None, 'Run directory of train.py.',
                            required=True)
_OUTPUT = flags.DEFINE_string('output_dir', None,
                              'Where to write (default: ROOT_DIR/export).')
_INT8 = flags.DEFINE_bool('int8', True, 'Also write an int8 sparse TFLite.')
_SAMPLES = flags.DEFINE_integer('num_samples', 256,
                                'Test images used to check the exports.',
                                lower_bound=1)
_DATA_DIR = flags.DEFINE_string('data_dir', None,
                                'Dataset files (default: the run\'s).')


quiet.define_flag()


def main(argv):
  quiet.filter_library_logs(_TF_LOG_LEVEL)
  del argv
  # TF-free: a directory that is not a run is refused before TF loads.
  from tff_feddst.program import hparams as hparams_lib  # pylint: disable=g-import-not-at-top
  from tff_feddst.program import paths  # pylint: disable=g-import-not-at-top
  hparams = hparams_lib.read_hparams(_ROOT.value)
  weights_path = paths.RunPaths.of(_ROOT.value).model_weights
  if hparams is None or not os.path.exists(weights_path):
    sys.exit(f'--root_dir={_ROOT.value}: no hparams.json or model_weights.npz; '
             'expected the directory of a launchers/train.py run with at least '
             'one checkpoint.')
  from tff_feddst.data import presence  # pylint: disable=g-import-not-at-top
  from tff_feddst.data import sources  # pylint: disable=g-import-not-at-top
  try:  # Missing files are refused before TensorFlow loads.
    presence.check(hparams['dataset'], _DATA_DIR.value or
                   hparams.get('data_dir'))
  except (sources.DatasetNotFoundError, sources.CorruptDatasetError) as e:
    sys.exit(f'export.py: error: {e}')
  tf_import.import_tensorflow()  # First: safe inside absl's main().
  # pylint: disable=g-import-not-at-top
  from tff_feddst import data as data_lib
  from tff_feddst import export
  from tff_feddst import models
  from tff_feddst import program
  # pylint: enable=g-import-not-at-top
  try:
    x_test, input_shape, num_classes = catalog.load_central_test(
        hparams['dataset'], _DATA_DIR.value or hparams.get('data_dir'),
        min_examples=hparams.get('min_examples') or 0)
  except data_lib.DatasetNotFoundError as e:
    sys.exit(str(e))
  model_fn = models.get_model_fn(hparams['model'], input_shape, num_classes)
  weights, round_num = program.load_model_weights(_ROOT.value)
  model = models.keras_model_from_weights(model_fn, weights)
  output_dir = _OUTPUT.value or os.path.join(_ROOT.value, 'export')
  artifacts = export.export_model(model, output_dir,
                                  x_test[:_SAMPLES.value],
                                  int8=_INT8.value)
  print(f'Exported round {round_num} of {_ROOT.value} to {output_dir}; every '
        f'model was checked on {_SAMPLES.value} test images (float exports: '
        f'max |diff| <= {export.FLOAT_TOLERANCE:g}; int8: top-1 agreement '
        f'>= {export.INT8_MIN_AGREEMENT}).')
  print(export.size_table(artifacts))


if __name__ == '__main__':
  app.run(main)
