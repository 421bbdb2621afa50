"""Writes any `FederatedData` as tf.Example TFRecord files that
`tfrecord.load_tfrecord` reads back bit for bit (the one-file-per-client
layout; launchers/write_tfrecords.py runs it on the bundled datasets)."""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import tempfile

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.data.federated import FederatedData
from tff_feddst.data.presence import SPEC_FILENAME, SUFFIX
from tff_feddst.data.tfrecord import CENTRAL_TEST_FILENAME, FeatureSpec

_BATCH = 1024  # Examples read from a client's dataset at a time.


def _example(x: np.ndarray, y: int) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      'x': tf.train.Feature(float_list=tf.train.FloatList(
          value=x.ravel().tolist())),
      'y': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y)])),
  })).SerializeToString()


def _write_records(path: Path, batches) -> int:
  """Writes (x, y) batches as tf.Examples; returns the number of records."""
  count = 0
  with tf.io.TFRecordWriter(str(path)) as writer:
    for x, y in batches:
      for xi, yi in zip(x, y):
        writer.write(_example(xi, yi))
        count += 1
  return count


def _client_batches(client_data: tff.simulation.datasets.ClientData,
                    cid: str):
  for batch in client_data.create_tf_dataset_for_client(cid).batch(
      _BATCH).as_numpy_iterator():
    yield batch['x'], batch['y']


def write_tfrecord(federated: FederatedData, output_dir: str | os.PathLike,
                   *, description: str = '') -> FeatureSpec:
  """Writes `federated` in the one-file-per-client layout.

  x is stored as a float_list, which holds float32 values exactly, so the
  files read back bit for bit. The directory appears whole or not at all: it
  is written under a temporary name beside `output_dir` and then renamed.

  Args:
    federated: The data; its client ids become file names.
    output_dir: Must not exist or be an empty directory.
    description: Stored in the spec, e.g. how the data was partitioned.

  Returns:
    The spec written to feature_spec.json.

  Raises:
    FileExistsError: if `output_dir` is a file or a non-empty directory.
    ValueError: if a client id cannot be a file name, or the elements are not
      `federated.element_spec`.
  """
  output_dir = Path(output_dir).expanduser().absolute()
  if output_dir.exists() and (not output_dir.is_dir()
                              or any(output_dir.iterdir())):
    raise FileExistsError(f'{output_dir}: exists and is not an empty '
                          'directory; remove it or choose another')
  for cid in federated.client_ids:
    if not cid or cid.startswith('.') or '/' in cid or '\0' in cid:
      raise ValueError(f'client id {cid!r} cannot be a file name')
  for split in (federated.train, federated.test):
    if split.element_type_structure != federated.element_spec:
      raise ValueError(f'elements are {split.element_type_structure}, '
                       f'expected {federated.element_spec}')
  if federated.client_ids != sorted(federated.client_ids):
    logging.warning('client ids are not in sorted order; load_tfrecord will '
                    'list them sorted, so seeded client sampling will differ')
  spec = FeatureSpec(input_key='x', input_dtype='float32',
                     input_shape=federated.input_shape, label_key='y',
                     num_classes=federated.num_classes,
                     description=description)
  output_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f'.{output_dir.name}.tmp-',
                              dir=output_dir.parent))
  try:
    tmp.chmod(0o755)
    for split, client_data in (('train', federated.train),
                               ('test', federated.test)):
      (tmp / split).mkdir()
      for cid in federated.client_ids:
        _write_records(tmp / split / f'{cid}{SUFFIX}',
                       _client_batches(client_data, cid))
    _write_records(tmp / CENTRAL_TEST_FILENAME, [federated.central_test])
    spec.to_json(tmp / SPEC_FILENAME)
    os.rename(tmp, output_dir)  # Replaces an empty directory atomically.
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  logging.info('Wrote %d clients of %s to %s', len(federated.client_ids),
               federated.name, output_dir)
  return spec
