"""launchers/export.py turns a run into checked SavedModel/TFLite files."""

import json

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from launcher_helpers import REPO, run_script
from tff_feddst import models
from tff_feddst import program

EXPORT = REPO / 'launchers' / 'export.py'


def test_export_from_run(launcher_runs, tmp_path):
  out = tmp_path / 'export'
  proc = run_script(EXPORT, f'--root_dir={launcher_runs.full_dir}',
                    f'--output_dir={out}', '--num_samples=64')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Exported round 6' in proc.stdout
  for name in ('model_dense.tflite', 'model_sparse.tflite',
               'model_sparse_int8.tflite'):
    assert f'| {name} |' in proc.stdout
    assert (out / name).stat().st_size > 0
  assert (out / 'saved_model' / 'saved_model.pb').exists()
  # Independent check: the SavedModel's kernels are as sparse as the run's masks.
  with np.load(launcher_runs.full_dir / 'model_weights.npz') as f:
    masks = [f[k] for k in sorted(f.files) if k.startswith('non_trainable_')
             and f[k].ndim == 2]
  model = tf.keras.models.load_model(str(out / 'saved_model'))
  kernels = [w.numpy() for w in model.weights if w.shape.ndims == 2]
  assert len(kernels) == len(masks)
  for k, m in zip(kernels, masks):
    assert np.count_nonzero(k) <= m.sum()
    assert np.all(k[m == 0] == 0)


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
