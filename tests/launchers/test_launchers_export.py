"""launchers/export.py turns a run into checked SavedModel/TFLite files."""


import numpy as np
import tensorflow as tf

from launcher_helpers import REPO, run_script

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


def test_export_names_a_directory_that_is_not_a_run(tmp_path):
  proc = run_script(EXPORT, f'--root_dir={tmp_path}')
  assert proc.returncode != 0
  assert f'--root_dir={tmp_path}' in proc.stderr
