"""Exported SavedModel/TFLite files reproduce the in-process sparse model."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst import export
from tff_feddst import models


def sparse_plain_model():
  tf.keras.utils.set_random_seed(0)
  wrapped = models.make_prunable(models.mnist_cnn())
  models.apply_initial_masks(wrapped, 0.8, 'feddst_erk')
  return models.strip(wrapped)


def test_export_writes_checked_artifacts_and_sparse_is_smaller(tmp_path):
  model = sparse_plain_model()
  x = np.random.default_rng(0).random((16, 28, 28, 1)).astype(np.float32)
  artifacts = export.export_model(model, str(tmp_path), x, int8=True)
  by_name = {a.name: a for a in artifacts}
  assert set(by_name) == {'saved_model', 'model_dense.tflite',
                          'model_sparse.tflite', 'model_sparse_int8.tflite'}
  for a in artifacts:
    assert os.path.exists(a.path)
    assert 0 < a.gzip_bytes
  # The sparse encoding stores ~20% of the kernels: far smaller than dense.
  assert by_name['model_sparse.tflite'].bytes < 0.5 * by_name[
      'model_dense.tflite'].bytes
  assert by_name['model_sparse_int8.tflite'].bytes < by_name[
      'model_sparse.tflite'].bytes
  assert by_name['model_sparse.tflite'].max_abs_diff <= export.FLOAT_TOLERANCE
  assert by_name['model_sparse_int8.tflite'].top1_agreement >= 0.9
  # Nothing half-written is left behind.
  assert not [f for f in os.listdir(tmp_path) if f.startswith('.') or
              f.endswith('.tmp')]
  table = export.size_table(artifacts)
  assert 'model_sparse.tflite' in table


def test_tflite_outputs_independently_match_keras(tmp_path):
  model = sparse_plain_model()
  x = np.random.default_rng(1).random((4, 28, 28, 1)).astype(np.float32)
  export.export_model(model, str(tmp_path), x, int8=False)
  interpreter = tf.lite.Interpreter(
      model_path=str(tmp_path / 'model_sparse.tflite'))
  interpreter.resize_tensor_input(interpreter.get_input_details()[0]['index'],
                                  x.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(interpreter.get_input_details()[0]['index'], x)
  interpreter.invoke()
  got = interpreter.get_tensor(interpreter.get_output_details()[0]['index'])
  np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)


def test_mismatch_is_reported(tmp_path, monkeypatch):
  model = sparse_plain_model()
  x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
  monkeypatch.setattr(export, '_run_tflite', lambda data, x: np.zeros((4, 10)))
  with pytest.raises(export.ExportMismatch, match='model_dense.tflite'):
    export.export_model(model, str(tmp_path), x, int8=False)
