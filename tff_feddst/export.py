"""Shipping a trained sparse model: SavedModel and (sparse) TFLite, checked.

Input is a plain Keras model whose kernels already hold kernel * mask (see
`models.keras_model_from_weights`). Outputs, each written atomically:

* `saved_model/`: a SavedModel with a `serving_default` signature;
* `model_dense.tflite`: float TFLite without sparsity encoding;
* `model_sparse.tflite`: float TFLite with `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`,
  which stores the pruned kernels in a sparse format;
* `model_sparse_int8.tflite` (optional): the same plus int8 quantization from a
  representative batch.

Every exported model is run on a batch of inputs and compared with the
in-process Keras model; a model outside its tolerance raises `ExportMismatch`.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import shutil
import tarfile
import tempfile

import numpy as np
import tensorflow as tf

from tff_feddst.program import paths

FLOAT_TOLERANCE = 1e-4     # max |logit difference| for float exports
INT8_MIN_AGREEMENT = 0.9   # top-1 agreement with the float model for int8


class ExportMismatch(AssertionError):
  """An exported model's outputs differ from the in-process model's."""


@dataclasses.dataclass(frozen=True)
class ExportedArtifact:
  name: str
  path: str
  bytes: int
  gzip_bytes: int
  max_abs_diff: float
  top1_agreement: float


def _gzip_size(data: bytes) -> int:
  return len(gzip.compress(data, compresslevel=9))


def _dir_bytes(path: str) -> tuple[int, int]:
  total = 0
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:gz') as tar:
    for root, _, files in os.walk(path):
      for f in files:
        total += os.path.getsize(os.path.join(root, f))
    tar.add(path, arcname=os.path.basename(path))
  return total, len(buf.getvalue())


def _run_tflite(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
  interpreter = tf.lite.Interpreter(model_content=model_bytes)
  inp = interpreter.get_input_details()[0]
  interpreter.resize_tensor_input(inp['index'], x.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(inp['index'], x.astype(inp['dtype']))
  interpreter.invoke()
  return interpreter.get_tensor(interpreter.get_output_details()[0]['index'])


def _tflite(model: tf.keras.Model, *, sparse: bool, int8_samples=None) -> bytes:
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  optimizations = []
  if sparse:
    optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
  if int8_samples is not None:
    optimizations.append(tf.lite.Optimize.DEFAULT)

    def representative():
      for row in int8_samples:
        yield [row[None].astype(np.float32)]
    converter.representative_dataset = representative
  converter.optimizations = optimizations
  return converter.convert()


def _compare(name, expected, got, *, int8: bool) -> tuple[float, float]:
  diff = float(np.max(np.abs(expected - got)))
  agree = float(np.mean(np.argmax(expected, -1) == np.argmax(got, -1)))
  if int8:
    if agree < INT8_MIN_AGREEMENT:
      raise ExportMismatch(f'{name}: top-1 agreement {agree:.3f} with the '
                           f'in-process model is below {INT8_MIN_AGREEMENT}.')
  elif diff > FLOAT_TOLERANCE:
    raise ExportMismatch(f'{name}: outputs differ from the in-process model '
                         f'by {diff:.2e} > {FLOAT_TOLERANCE:.0e}.')
  return diff, agree


def export_model(model: tf.keras.Model, output_dir: str, sample_inputs, *,
                 int8: bool = True) -> list[ExportedArtifact]:
  """Writes SavedModel and TFLite files, checks each against `model`."""
  os.makedirs(output_dir, exist_ok=True)
  x = np.asarray(sample_inputs, np.float32)
  expected = model(x, training=False).numpy()
  artifacts = []

  staging = tempfile.mkdtemp(dir=output_dir, prefix='.saved_model.')
  try:
    model.save(staging, save_format='tf')
    reloaded = tf.saved_model.load(staging)
    serving = reloaded.signatures['serving_default']
    got = list(serving(tf.constant(x)).values())[0].numpy()
    diff, agree = _compare('saved_model', expected, got, int8=False)
    final = os.path.join(output_dir, 'saved_model')
    if os.path.exists(final):
      shutil.rmtree(final)
    os.replace(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  size, gz = _dir_bytes(final)
  artifacts.append(ExportedArtifact('saved_model', final, size, gz, diff, agree))

  variants = [('model_dense.tflite', dict(sparse=False), False),
              ('model_sparse.tflite', dict(sparse=True), False)]
  if int8:
    variants.append(('model_sparse_int8.tflite',
                     dict(sparse=True, int8_samples=x), True))
  for filename, kwargs, is_int8 in variants:
    data = _tflite(model, **kwargs)
    diff, agree = _compare(filename, expected, _run_tflite(data, x),
                           int8=is_int8)
    path = os.path.join(output_dir, filename)
    paths.write_atomic(path, data)
    artifacts.append(ExportedArtifact(filename, path, len(data),
                                      _gzip_size(data), diff, agree))
  return artifacts


def size_table(artifacts: list[ExportedArtifact]) -> str:
  """A Markdown table of sizes and agreement with the in-process model."""
  rows = ['| artifact | bytes | gzipped | max abs diff | top-1 agreement |',
          '|---|---|---|---|---|']
  for a in artifacts:
    rows.append(f'| {a.name} | {a.bytes:,} | {a.gzip_bytes:,} | '
                f'{a.max_abs_diff:.2e} | {a.top1_agreement:.3f} |')
  return '\n'.join(rows)
