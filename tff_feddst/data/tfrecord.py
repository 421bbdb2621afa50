"""Federated client data from tf.Example TFRecord files, and a writer for it.

Production teams keep their client data as tf.Example records, so this reader
lets the training program run on such files unchanged: `load_tfrecord` returns
the same `FederatedData` as the bundled readers. Two layouts are read:

```
data_dir/
  feature_spec.json         which features hold the input and the label
  train/<client_id>.tfrecord  one file per client (the client id is the stem)
  test/<client_id>.tfrecord   every train client needs one (may be empty)
  central_test.tfrecord     optional; else the union of the client test files
```

or, with a client-id feature named by the spec's `client_id_key`,

```
data_dir/
  feature_spec.json
  train-*.tfrecord          shards; each record names its client
  test-*.tfrecord
  central_test.tfrecord     optional; else every record of the test shards
```

`feature_spec.json` (see `FeatureSpec`):

```
{"input_key": "x", "input_dtype": "float32", "input_shape": [8, 8, 1],
 "label_key": "y", "label_dtype": "int64", "num_classes": 10,
 "client_id_key": null, "description": ""}
```

Every file is read once at load time, one tf.data pipeline a split: the pass
counts the examples (the partition summary needs them) and checks every record
against the spec, so a damaged file or a spec that does not fit the records
fails here, with the file, the record and the key named, instead of deep
inside a training round. `tfrecord_writer.write_tfrecord` writes any
`FederatedData` in the one-file-per-client layout.

Why one file of ~700 lines: the reader's checks (`_scan`, `_check_example`,
`_diagnose`) exist to name the file, record and key of a defect in either
layout, and share the spec's parser with the training pipeline; apart they
would pass those internals across a module boundary.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from google.protobuf import message as protobuf_message

from tff_feddst.data import partition as partition_lib
from tff_feddst.data import presence
from tff_feddst.data.federated import FederatedData
from tff_feddst.data.presence import SPEC_FILENAME, SUFFIX
from tff_feddst.data.sources import CorruptDatasetError, DatasetNotFoundError

CENTRAL_TEST_FILENAME = 'central_test.tfrecord'
INPUT_DTYPES = ('float32', 'uint8', 'int64')
LABEL_DTYPES = ('int64', 'float32')

# The tf.train.Feature list that holds each dtype; uint8 images are one
# bytes value of prod(input_shape) raw bytes (tf.io.decode_raw's format).
_KIND = {'float32': 'float_list', 'int64': 'int64_list', 'uint8': 'bytes_list'}
_TF_DTYPE = {'float32': tf.float32, 'int64': tf.int64, 'uint8': tf.string}
_PARSE_BATCH = 1024
_MAX_LISTED = 5


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """Which tf.Example features hold a client example, and their format.

  Integer inputs ('uint8', 'int64') are pixel intensities in [0, 255] and are
  divided by 255, as the bundled readers do with their uint8 files; 'float32'
  inputs are used as stored (the bundled datasets' floats lie in [0, 1]).
  Labels are class indices in [0, num_classes); float labels must be whole.

  Attributes:
    input_key: Feature holding the input, prod(input_shape) values (for
      'uint8': one bytes value of prod(input_shape) bytes).
    input_dtype: One of INPUT_DTYPES.
    input_shape: Shape of one input, e.g. (28, 28, 1).
    label_key: Feature holding the class index, one value.
    label_dtype: One of LABEL_DTYPES.
    num_classes: Number of classes.
    client_id_key: Bytes feature naming each record's client; needed only by
      the sharded layout (train-*.tfrecord), ignored by the per-client one.
    description: Free text, e.g. how the data was partitioned; not read.
  """

  input_key: str
  input_dtype: str
  input_shape: tuple[int, ...]
  label_key: str
  num_classes: int
  label_dtype: str = 'int64'
  client_id_key: str | None = None
  description: str = ''

  def __post_init__(self) -> None:
    shape = self.input_shape
    if (isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence)
        or not shape or any(not _is_int(d) or d < 1 for d in shape)):
      raise ValueError(f'input_shape must be a non-empty list of positive '
                       f'integers, got {shape!r}')
    object.__setattr__(self, 'input_shape', tuple(int(d) for d in shape))
    if self.input_dtype not in INPUT_DTYPES:
      raise ValueError(f'input_dtype must be one of {", ".join(INPUT_DTYPES)}, '
                       f'got {self.input_dtype!r}')
    if self.label_dtype not in LABEL_DTYPES:
      raise ValueError(f'label_dtype must be one of {", ".join(LABEL_DTYPES)}, '
                       f'got {self.label_dtype!r}')
    if not _is_int(self.num_classes) or self.num_classes < 1:
      raise ValueError(f'num_classes must be a positive integer, got '
                       f'{self.num_classes!r}')
    keys = {'input_key': self.input_key, 'label_key': self.label_key}
    if self.client_id_key is not None:
      keys['client_id_key'] = self.client_id_key
    for field, key in keys.items():
      if not isinstance(key, str) or not key:
        raise ValueError(f'{field} must be a non-empty string, got {key!r}')
    if len(set(keys.values())) < len(keys):
      raise ValueError(f'feature keys must differ, got {keys}')
    if not isinstance(self.description, str):
      raise ValueError(f'description must be a string, got '
                       f'{self.description!r}')

  @property
  def input_size(self) -> int:
    return math.prod(self.input_shape)

  def to_dict(self) -> dict[str, Any]:
    return dict(input_key=self.input_key, input_dtype=self.input_dtype,
                input_shape=list(self.input_shape), label_key=self.label_key,
                label_dtype=self.label_dtype, num_classes=self.num_classes,
                client_id_key=self.client_id_key,
                description=self.description)

  @classmethod
  def from_dict(cls, fields: dict[str, Any]) -> FeatureSpec:
    """The spec of a dict such as `to_dict` returns.

    Unknown fields are refused rather than ignored, so that a misspelt key
    (say "lable_key") is reported instead of silently taking a default.

    Raises:
      ValueError: on a missing, unknown or invalid field.
    """
    if not isinstance(fields, dict):
      raise ValueError(f'expected a JSON object, got {type(fields).__name__}')
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
      raise ValueError(f'unknown fields {unknown}; valid fields: '
                       f'{", ".join(known)}')
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING]
    missing = [name for name in required if name not in fields]
    if missing:
      raise ValueError(f'missing fields {missing}')
    return cls(**fields)

  @classmethod
  def from_json(cls, path: str | os.PathLike) -> FeatureSpec:
    """Reads a spec file (the format `to_json` writes).

    Raises:
      DatasetNotFoundError: if `path` does not exist.
      CorruptDatasetError: if it is not JSON or not a valid spec; the message
        names the file and the offending field.
    """
    path = presence.feature_spec_file(path)
    try:
      fields = json.loads(path.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise CorruptDatasetError(f'{path}: not a JSON file ({e})') from e
    try:
      return cls.from_dict(fields)
    except (TypeError, ValueError) as e:
      raise CorruptDatasetError(f'{path}: invalid feature spec: {e}') from e

  def to_json(self, path: str | os.PathLike) -> None:
    """Writes the spec as a JSON object, one field a line."""
    lines = [f'  {json.dumps(k)}: {json.dumps(v)}'
             for k, v in self.to_dict().items()]
    Path(path).write_text('{\n' + ',\n'.join(lines) + '\n}\n',
                          encoding='utf-8')


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------
# Parsing.


def _parser(spec: FeatureSpec, client_id_key: str | None, *, for_scan: bool
            ) -> Callable[[tf.Tensor], collections.OrderedDict]:
  """A function from a batch of serialized records to parsed tensors.

  The training datasets and the load-time scan share it, so the records that
  pass the scan are parsed exactly as training parses them.

  Args:
    spec: The feature spec.
    client_id_key: Also parse this bytes feature, as 'client_id'.
    for_scan: Also return what the scan checks: the raw label ('label') and,
      for int64 inputs, whether each input lies in [0, 255] ('in_range').
  """
  input_shape = [] if spec.input_dtype == 'uint8' else list(spec.input_shape)
  features = {
      spec.input_key: tf.io.FixedLenFeature(input_shape,
                                            _TF_DTYPE[spec.input_dtype]),
      spec.label_key: tf.io.FixedLenFeature([], _TF_DTYPE[spec.label_dtype]),
  }
  if client_id_key is not None:
    features[client_id_key] = tf.io.FixedLenFeature([], tf.string)
  axes = list(range(1, 1 + len(spec.input_shape)))

  def parse(serialized: tf.Tensor) -> collections.OrderedDict:
    parsed = tf.io.parse_example(serialized, features)
    raw_x = parsed[spec.input_key]
    if spec.input_dtype == 'uint8':
      raw_x = tf.reshape(tf.io.decode_raw(raw_x, tf.uint8),
                         [-1, *spec.input_shape])
    x = tf.cast(raw_x, tf.float32)
    if spec.input_dtype != 'float32':
      x = x / 255.0  # float32 division, as numpy does in sources.py.
    out = collections.OrderedDict(
        x=x, y=tf.cast(parsed[spec.label_key], tf.int32))
    if client_id_key is not None:
      out['client_id'] = parsed[client_id_key]
    if for_scan:
      out['label'] = parsed[spec.label_key]
      if spec.input_dtype == 'int64':
        out['in_range'] = tf.reduce_all(
            (raw_x >= 0) & (raw_x <= 255), axis=axes)
    return out

  return parse


def _records(files: tf.Tensor, parse: Callable[[tf.Tensor], Any]
             ) -> tf.data.Dataset:
  """The parsed examples of `files`, one element per record, in file order."""
  return tf.data.TFRecordDataset(files).batch(_PARSE_BATCH).map(
      parse).unbatch()


def _xy(element: collections.OrderedDict) -> collections.OrderedDict:
  return collections.OrderedDict(x=element['x'], y=element['y'])


# ---------------------------------------------------------------------------
# Load-time checks.


class _SpecSource:
  """Names where the spec came from and where its fields live, for messages."""

  def __init__(self, spec: FeatureSpec, where: str):
    self.spec = spec
    self.where = where

  def field(self, name: str) -> str:
    return f'{name}={getattr(self.spec, name)!r} in {self.where}'


def _tf_message(error: tf.errors.OpError) -> str:
  """TF's error text without the op and function-node decoration."""
  damage = re.search(r'(corrupted|truncated) record at \d+', error.message)
  if damage:  # TF appends internals to these, e.g. "' failed with Read less".
    return damage.group(0)
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', error.message)
  return re.sub(r'\s*\[Op:[^\]]*\].*$', '', text, flags=re.DOTALL).strip()


def _check_example(raw: bytes, path: Path, index: int, source: _SpecSource,
                   client_id_key: str | None) -> None:
  """Checks one serialized record against the spec in Python.

  Slow but precise: it runs only after the fast scan failed, to say which
  key of which record is wrong and how.

  Raises:
    CorruptDatasetError: naming `path`, the record and the key.
  """
  spec = source.spec
  where = f'{path}: record {index}'
  try:
    example = tf.train.Example.FromString(raw)
  except protobuf_message.DecodeError as e:
    raise CorruptDatasetError(f'{where} is not a serialized tf.train.Example '
                              f'({e})') from e
  features = example.features.feature
  present = ', '.join(repr(k) for k in sorted(features)) or 'none'
  wanted = [('input_key', spec.input_dtype), ('label_key', spec.label_dtype)]
  if client_id_key is not None:
    wanted.append(('client_id_key', 'bytes'))
  for field, dtype in wanted:
    key = getattr(spec, field)
    if key not in features:
      raise CorruptDatasetError(
          f"{where} has no feature '{key}' ({source.field(field)}); its "
          f'features are {present}')
    kind = features[key].WhichOneof('kind')
    expected = _KIND.get(dtype, 'bytes_list')
    if kind != expected:
      needs = {'input_key': source.field('input_dtype'),
               'label_key': source.field('label_dtype'),
               'client_id_key': f'a client id ({source.field(field)})'}
      raise CorruptDatasetError(
          f"{where}: feature '{key}' is of kind {kind or 'none (no values)'}"
          f', but {needs[field]} needs kind {expected}')
    values = getattr(features[key], kind).value
    if field == 'input_key' and dtype == 'uint8':
      if len(values) != 1 or len(values[0]) != spec.input_size:
        sizes = [len(v) for v in values]
        raise CorruptDatasetError(
            f"{where}: feature '{key}' holds {len(values)} bytes values of "
            f'{sizes} bytes, but {source.field("input_shape")} with uint8 '
            f'input needs one value of {spec.input_size} bytes')
    elif field == 'input_key':
      if len(values) != spec.input_size:
        raise CorruptDatasetError(
            f"{where}: feature '{key}' holds {len(values)} values, but "
            f'{source.field("input_shape")} needs {spec.input_size}')
      if dtype == 'int64' and any(v < 0 or v > 255 for v in values):
        raise CorruptDatasetError(
            f"{where}: feature '{key}' holds values outside [0, 255] "
            f'(min {min(values)}, max {max(values)}); int64 inputs are pixel '
            f'intensities ({source.field("input_dtype")})')
    elif len(values) != 1:
      raise CorruptDatasetError(
          f"{where}: feature '{key}' holds {len(values)} values, expected one "
          f'({source.field(field)})')
    elif field == 'label_key':
      _check_label(values[0], where, key, source)


def _check_label(label: float | int, where: str, key: str,
                 source: _SpecSource) -> None:
  num_classes = source.spec.num_classes
  if (not math.isfinite(label) or label != int(label)
      or not 0 <= label < num_classes):
    raise CorruptDatasetError(
        f"{where}: label '{key}' = {label} is not a class index in "
        f'[0, {num_classes}) ({source.field("num_classes")})')


def _client_id(raw: bytes, path: Path, index: int,
               source: _SpecSource) -> str:
  """A record's client id as text; refuses ids that could not round-trip."""
  try:
    cid = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise CorruptDatasetError(
        f'{path}: record {index}: client id {raw!r} is not UTF-8 text '
        f'({source.field("client_id_key")})') from e
  if not cid:
    raise CorruptDatasetError(
        f'{path}: record {index}: empty client id '
        f'({source.field("client_id_key")})')
  return cid


def _diagnose(path: Path, source: _SpecSource,
              client_id_key: str | None) -> None:
  """Reads `path` record by record and raises at the first bad one."""
  index = 0
  iterator = iter(tf.data.TFRecordDataset(str(path)))
  while True:
    try:
      raw = next(iterator)
    except StopIteration:
      return
    except tf.errors.DataLossError as e:
      raise CorruptDatasetError(
          f'{path}: damaged or truncated TFRecord file after {index} good '
          f'records ({_tf_message(e)}); rewrite the file') from e
    _check_example(raw.numpy(), path, index, source, client_id_key)
    index += 1


@dataclasses.dataclass
class _FileScan:
  """What the scan learnt about one file."""

  num_records: int = 0
  # Client id -> per-class example counts; None when the file is one client's.
  class_counts: dict[str | None, np.ndarray] = dataclasses.field(
      default_factory=dict)
  xs: list[np.ndarray] = dataclasses.field(default_factory=list)
  ys: list[np.ndarray] = dataclasses.field(default_factory=list)


def _scan(files: Sequence[Path], source: _SpecSource,
          client_id_key: str | None, keep_arrays: bool) -> list[_FileScan]:
  """Parses and checks every record of `files` in one tf.data pipeline.

  One pipeline rather than one per file, since creating a dataset costs tens
  of milliseconds and a federated dataset may have thousands of files. When
  it fails, the files from the one being read onwards are re-read record by
  record (`_diagnose`) to name the bad record and key.

  Args:
    files: The TFRecord files.
    source: The spec and where it came from.
    client_id_key: Group counts by this feature (sharded layout).
    keep_arrays: Also return the parsed x and y of every record.

  Returns:
    One `_FileScan` per file.

  Raises:
    CorruptDatasetError: if a file is damaged or a record does not fit the
      spec.
  """
  spec = source.spec
  scans = [_FileScan() for _ in files]
  if not files:
    return scans
  parse = _parser(spec, client_id_key, for_scan=True)
  names = tf.constant([str(f) for f in files])
  batches = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(files), dtype=tf.int64), names)).interleave(
          lambda i, name: tf.data.TFRecordDataset(name).batch(
              _PARSE_BATCH).map(lambda s: (i, parse(s))),
          cycle_length=1)  # Sequential: file by file, in order.
  current = 0
  iterator = iter(batches)
  while True:
    try:
      file_index, batch = next(iterator)
    except StopIteration:
      return scans
    except (tf.errors.OpError, UnicodeDecodeError) as e:
      # TF fails to decode its own message when it quotes non-UTF-8 bytes of
      # a damaged record, hence UnicodeDecodeError.
      for path in files[current:]:
        _diagnose(path, source, client_id_key)
      text = (_tf_message(e) if isinstance(e, tf.errors.OpError)
              else 'TF error text not decodable')
      raise CorruptDatasetError(
          f'{files[current]} or a later file: cannot read the records with '
          f'the spec of {source.where} ({text})') from e
    current = int(file_index)
    scan, path = scans[current], files[current]
    labels = batch['label'].numpy()
    bad = (labels != np.floor(labels)) | (labels < 0) | (
        labels >= spec.num_classes)
    if bad.any():
      j = int(np.argmax(bad))
      _check_label(labels[j].item(), f'{path}: record {scan.num_records + j}',
                   spec.label_key, source)
    if 'in_range' in batch and not batch['in_range'].numpy().all():
      _diagnose(path, source, client_id_key)
      raise AssertionError(f'{path}: the scan and _diagnose disagree')
    y = batch['y'].numpy()
    if client_id_key is None:
      groups = {None: y}
    else:
      owners = batch['client_id'].numpy()
      groups = {_client_id(owner, path, scan.num_records + int(
          np.argmax(owners == owner)), source): y[owners == owner]
                for owner in np.unique(owners)}
    for cid, labels_of_cid in groups.items():
      counts = np.bincount(labels_of_cid, minlength=spec.num_classes)
      if cid in scan.class_counts:
        scan.class_counts[cid] += counts
      else:
        scan.class_counts[cid] = counts
    if keep_arrays:
      scan.xs.append(batch['x'].numpy())
      scan.ys.append(y)
    scan.num_records += len(y)


# ---------------------------------------------------------------------------
# Loading.


def _list(paths: Sequence[Path]) -> str:
  shown = ', '.join(str(p) for p in paths[:_MAX_LISTED])
  more = len(paths) - _MAX_LISTED
  return shown + (f' and {more} more' if more > 0 else '')


def _per_client_ids(directory: Path) -> dict[str, Path]:
  """Client id -> file, sorted by id."""
  files = {p.name[:-len(SUFFIX)]: p for p in directory.glob(f'*{SUFFIX}')
           if p.is_file()}
  return dict(sorted(files.items()))


def _central_test(data_dir: Path, source: _SpecSource,
                  test_scans: Sequence[_FileScan]
                  ) -> tuple[np.ndarray, np.ndarray]:
  """central_test.tfrecord if present, else every record of the test files."""
  central = data_dir / CENTRAL_TEST_FILENAME
  if central.is_file():
    (scan,) = _scan([central], source, None, keep_arrays=True)
    if not scan.num_records:
      raise CorruptDatasetError(f'{central}: holds no records; remove it to '
                                'use the union of the client test files')
    scans = [scan]
  else:
    scans = list(test_scans)
  xs = [x for s in scans for x in s.xs]
  ys = [y for s in scans for y in s.ys]
  if not xs:
    raise DatasetNotFoundError(
        f'{data_dir}: no test examples: {CENTRAL_TEST_FILENAME} is absent and '
        'the client test files hold no records')
  return np.concatenate(xs), np.concatenate(ys)


class _Layout(NamedTuple):
  """What a layout reader found.

  Attributes:
    counts: Every client's per-class train example counts, sorted by id.
    train_fn: Client id -> its train dataset (serializable).
    test_fn: Client id -> its test dataset (serializable).
    central_test: The central test set (x, y).
  """

  counts: dict[str, np.ndarray]
  train_fn: Callable[[str], tf.data.Dataset]
  test_fn: Callable[[str], tf.data.Dataset]
  central_test: tuple[np.ndarray, np.ndarray]


def _load_per_client(data_dir: Path, source: _SpecSource) -> _Layout:
  """The one-file-per-client layout."""
  train_files = _per_client_ids(data_dir / 'train')
  if not train_files:
    raise DatasetNotFoundError(f'{data_dir / "train"}: no *{SUFFIX} files '
                               '(one per client, named <client_id>.tfrecord)')
  test_files = _per_client_ids(data_dir / 'test')
  missing = [data_dir / 'test' / f'{cid}{SUFFIX}' for cid in train_files
             if cid not in test_files]
  if missing:
    raise DatasetNotFoundError(
        f'{len(missing)} train clients have no test file: {_list(missing)} '
        '(no such file); every client needs one, an empty file will do')
  test_only = [p for cid, p in test_files.items() if cid not in train_files]
  if test_only:
    logging.warning('%d test files have no train file; their records are '
                    'used only in the central test set: %s', len(test_only),
                    _list(test_only))
  keep_test = not (data_dir / CENTRAL_TEST_FILENAME).is_file()
  train_scans = _scan(list(train_files.values()), source, None, False)
  test_scans = _scan(list(test_files.values()), source, None, keep_test)
  counts = {cid: s.class_counts.get(None, np.zeros(source.spec.num_classes,
                                                 np.int64))
            for cid, s in zip(train_files, train_scans)}
  train_dir, test_dir = str(data_dir / 'train'), str(data_dir / 'test')
  parse = _parser(source.spec, None, for_scan=False)

  def dataset_fn(directory: str) -> Callable[[str], tf.data.Dataset]:
    def client_dataset(client_id: str) -> tf.data.Dataset:
      path = tf.strings.join([directory, '/', client_id, SUFFIX])
      return _records(path, parse).map(_xy)
    return client_dataset

  return _Layout(counts, dataset_fn(train_dir), dataset_fn(test_dir),
                 _central_test(data_dir, source, test_scans))


def _load_sharded(data_dir: Path, source: _SpecSource,
                  train_shards: list[Path]) -> _Layout:
  """The sharded layout with a client-id feature; shards in name order."""
  key = source.spec.client_id_key
  if key is None:
    raise CorruptDatasetError(
        f'{data_dir} holds sharded train-*{SUFFIX} files, so the spec in '
        f'{source.where} needs a "client_id_key" naming the feature that '
        'holds each record\'s client id')
  test_shards = sorted(data_dir.glob(f'test-*{SUFFIX}'))
  if not test_shards:
    raise DatasetNotFoundError(f'{data_dir}: train-*{SUFFIX} shards but no '
                               f'test-*{SUFFIX} shards')
  keep_test = not (data_dir / CENTRAL_TEST_FILENAME).is_file()
  train_scans = _scan(train_shards, source, key, False)
  test_scans = _scan(test_shards, source, key, keep_test)
  counts: dict[str, np.ndarray] = {}
  for scan in train_scans:
    for cid, c in scan.class_counts.items():
      counts[cid] = counts.get(cid, 0) + c
  counts = dict(sorted(counts.items()))
  test_only = sorted({cid for s in test_scans for cid in s.class_counts}
                     - counts.keys())
  if test_only:
    logging.warning('%d client ids appear only in the test shards; their '
                    'records are used only in the central test set: %s',
                    len(test_only), ', '.join(test_only[:_MAX_LISTED]))
  parse = _parser(source.spec, key, for_scan=False)

  def dataset_fn(shards: list[Path], scans: list[_FileScan]
                 ) -> Callable[[str], tf.data.Dataset]:
    # Which shards hold each client, so a client reads only those.
    member = [[cid in s.class_counts for s in scans] for cid in counts]
    names, ids = [str(s) for s in shards], list(counts)

    def client_dataset(client_id: str) -> tf.data.Dataset:
      client_id = tf.convert_to_tensor(client_id, tf.string)
      row = tf.reshape(tf.where(tf.equal(tf.constant(ids), client_id)), [-1])
      files = tf.boolean_mask(tf.constant(names),
                              tf.gather(tf.constant(member), row[0]))
      return _records(files, parse).filter(
          lambda e: tf.equal(e['client_id'], client_id)).map(_xy)
    return client_dataset

  return _Layout(counts, dataset_fn(train_shards, train_scans),
                 dataset_fn(test_shards, test_scans),
                 _central_test(data_dir, source, test_scans))


def load_tfrecord(data_dir: str | os.PathLike,
                  spec: FeatureSpec | str | os.PathLike | None = None, *,
                  min_examples: int = 0) -> FederatedData:
  """Federated data from tf.Example TFRecord files (layouts: module doc).

  Every record is read and checked here, so that a missing or damaged file
  or a spec that does not fit the records is reported before training with
  the file, record and key named. Clients are ordered by id (string order),
  which fixes which clients a seeded sampler picks.

  Args:
    data_dir: The dataset directory.
    spec: The feature spec, or the path of a JSON spec file; default
      `data_dir/feature_spec.json`.
    min_examples: Drop clients with fewer train examples (clients without
      train examples are always dropped), as `load_emnist` does.

  Returns:
    `FederatedData` whose elements are OrderedDict(x=float32 input_shape,
    y=int32 ()), like the bundled readers'.

  Raises:
    DatasetNotFoundError: if the directory, the spec or a needed file is
      missing.
    CorruptDatasetError: if a file is damaged, the spec is invalid or a
      record does not fit it.
    ValueError: if no client has `min_examples` train examples.
  """
  data_dir = Path(data_dir).expanduser().absolute()
  from_file = spec is None or not isinstance(spec, FeatureSpec)
  spec_path = (Path(spec).expanduser().absolute() if spec is not None and
               from_file else data_dir / SPEC_FILENAME)
  kind = presence.tfrecord_layout(
      data_dir, spec_file=spec_path if from_file else None)
  if from_file:
    source = _SpecSource(FeatureSpec.from_json(spec_path), str(spec_path))
  else:
    source = _SpecSource(spec, 'the FeatureSpec passed to load_tfrecord')
  if kind == presence.PER_CLIENT:
    layout = _load_per_client(data_dir, source)
  else:
    train_shards = sorted(p for p in data_dir.glob(f'train-*{SUFFIX}')
                          if p.is_file())
    layout = _load_sharded(data_dir, source, train_shards)
  counts = layout.counts
  ids = [cid for cid, c in counts.items() if c.sum() >= max(min_examples, 1)]
  if not ids:
    raise ValueError(f'{data_dir}: no client has >= {max(min_examples, 1)} '
                     'train examples')
  kept = np.stack([counts[cid] for cid in ids])
  summary = partition_lib.PartitionSummary.from_counts(
      kept.sum(axis=1), float((kept > 0).sum(axis=1).mean()),
      len(counts) - len(ids))
  name = f'tfrecord:{data_dir}'
  logging.info('%s: %s', name, summary)
  from_fn = tff.simulation.datasets.ClientData.from_clients_and_tf_fn
  return FederatedData(
      train=from_fn(ids, layout.train_fn),
      test=from_fn(ids, layout.test_fn),
      central_test=layout.central_test,
      num_classes=source.spec.num_classes,
      input_shape=source.spec.input_shape,
      summary=summary,
      name=name)
