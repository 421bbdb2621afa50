"""launchers/export.py turns a run into checked SavedModel/TFLite files (the
export of a launcher run: test_launchers_train.py)."""

import json

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from launcher_helpers import EXPORT, run_script
from tff_feddst import models
from tff_feddst import program


def test_export_of_an_emnist_run(tmp_path, write_fake_emnist):
  """An EMNIST run's export is checked on the federated test split's images."""
  rng = np.random.default_rng(0)
  write_fake_emnist(tmp_path / 'emnist_all.sqlite', {
      (cid, split): [(rng.random((28, 28)).astype(np.float32), int(label))
                     for label in rng.integers(0, 10, 12)]
      for cid in ('w1', 'w2') for split in ('digits_only_train',
                                            'digits_only_test')})
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'hparams.json').write_text(json.dumps(dict(
      dataset='emnist', model='mlp', data_dir=str(tmp_path), min_examples=0)))
  model = models.make_prunable(models.get_model_fn('mlp', (28, 28, 1), 10)())
  models.apply_initial_masks(model, 0.8, 'erk')
  program.save_model_weights(
      program.RunPaths.of(run).model_weights,
      tff.learning.models.ModelWeights(
          [v.numpy() for v in model.trainable_weights],
          [v.numpy() for v in model.non_trainable_weights]), 7)
  proc = run_script(EXPORT, f'--root_dir={run}', '--noint8',
                    '--num_samples=16')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Exported round 7' in proc.stdout
  assert 'checked on 16 test images' in proc.stdout
  assert (run / 'export' / 'model_sparse.tflite').stat().st_size > 0
