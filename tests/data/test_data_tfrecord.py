"""TFRecord client data: the writer tool's round trip, both layouts, errors."""

import collections
import dataclasses
import json
import os
import re
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst import data as data_lib
from tff_feddst.data import catalog
from tff_feddst.data import presence
from tff_feddst.data import tfrecord
from tff_feddst.data import tfrecord_writer
from tff_feddst.data.sources import CorruptDatasetError, DatasetNotFoundError

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'launchers' / 'write_tfrecords.py'


def elements(client_data, cid):
  return list(client_data.create_tf_dataset_for_client(cid).as_numpy_iterator())


def assert_same_elements(a, b):
  assert len(a) == len(b)
  for ea, eb in zip(a, b):
    assert list(ea) == list(eb) == ['x', 'y']
    assert ea['x'].dtype == eb['x'].dtype == np.float32
    assert ea['x'].tobytes() == eb['x'].tobytes()  # Bit for bit.
    assert ea['y'] == eb['y'] and eb['y'].dtype == np.int32


# ---------------------------------------------------------------------------
# The tool's round trip.


@pytest.fixture(scope='module')
def digits_written(tmp_path_factory):
  """The digits demo data, written by the tool with train.py's defaults."""
  out = tmp_path_factory.mktemp('tool') / 'digits'
  proc = run_tool(f'--output_dir={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'--data_dir={out}' in proc.stdout
  return out


@pytest.fixture(scope='module')
def digits_bundled():
  """What launchers/train.py trains on with no flags."""
  flags = catalog.SIZE_DEFAULTS['demo']
  return data_lib.build_federated_data(
      data_lib.load('digits'), partition='dirichlet',
      num_clients=flags['total_clients'], beta=0.1, seed=0)


def test_round_trip_of_the_digits_demo(digits_written, digits_bundled):
  expected = digits_bundled
  got = data_lib.load_tfrecord(digits_written)
  assert got.client_ids == expected.client_ids
  assert got.test.client_ids == expected.client_ids
  assert got.element_spec == expected.element_spec
  assert got.train.element_type_structure == expected.element_spec
  assert got.test.element_type_structure == expected.element_spec
  assert got.input_shape == expected.input_shape == (8, 8, 1)
  assert got.num_classes == expected.num_classes == 10
  for cid in expected.client_ids:
    assert_same_elements(elements(got.train, cid),
                         elements(expected.train, cid))
    assert_same_elements(elements(got.test, cid), elements(expected.test, cid))
  for a, b in zip(got.central_test, expected.central_test):
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
  # The files hold only the kept clients, so nothing is dropped on reading.
  assert got.summary == dataclasses.replace(expected.summary, dropped=0)
  spec = json.loads((digits_written / 'feature_spec.json').read_text())
  assert spec['input_dtype'] == 'float32' and spec['input_shape'] == [8, 8, 1]
  assert '--dataset=digits' in spec['description']
  assert '--beta=0.1' in spec['description']
  assert '--total_clients=20 ' in spec['description']


def run_tool(*args):
  return subprocess.run(
      [sys.executable, str(TOOL), *map(str, args)], cwd=REPO,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), capture_output=True,
      text=True, timeout=300, check=False)


def test_tool_writes_emnist_first_writers(tmp_path, write_fake_emnist):
  rng = np.random.default_rng(0)

  def examples(labels):
    return [(rng.random((28, 28)).astype(np.float32), lab) for lab in labels]

  write_fake_emnist(tmp_path / 'emnist_all.sqlite', {
      ('w1', 'digits_only_train'): examples([1, 2]),
      ('w1', 'digits_only_test'): examples([3]),
      ('w0', 'digits_only_train'): examples([4, 5, 6]),
      ('w0', 'digits_only_test'): examples([7]),
      ('w2', 'digits_only_train'): examples([8]),
      ('w2', 'digits_only_test'): examples([9])})
  out = tmp_path / 'out'
  proc = run_tool('--dataset=emnist', f'--data_dir={tmp_path}',
                  '--total_clients=2', f'--output_dir={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  expected = data_lib.load_emnist(tmp_path)
  got = data_lib.load_tfrecord(out)
  assert got.client_ids == expected.client_ids[:2] == ['w0', 'w1']
  for cid in got.client_ids:
    assert_same_elements(elements(got.train, cid),
                         elements(expected.train, cid))
    assert_same_elements(elements(got.test, cid), elements(expected.test, cid))
  for a, b in zip(got.central_test, expected.central_test):
    assert a.tobytes() == b.tobytes()  # All writers' test examples.


def test_tool_refuses_a_non_empty_output_dir(tmp_path):
  (tmp_path / 'kept').write_text('')
  proc = run_tool(f'--output_dir={tmp_path}')
  assert proc.returncode == 1
  assert f'{tmp_path} exists and is not an empty directory' in proc.stderr
  assert [p.name for p in tmp_path.iterdir()] == ['kept']


def test_dataset_fn_is_serializable(digits_written, digits_bundled):
  got = data_lib.load_tfrecord(digits_written)
  cid = got.client_ids[1]
  # As TFF calls it: traced in a graph, the client id a string tensor.
  traced = tf.function(got.train.serializable_dataset_fn)
  assert_same_elements(list(traced(tf.constant(cid)).as_numpy_iterator()),
                       elements(digits_bundled.train, cid))


# ---------------------------------------------------------------------------
# Small datasets for the other tests.


def small_federated():
  # 130 train examples: clients of 33, 33, 32 and 32.
  central = data_lib.make_synthetic(162, image_shape=(4, 4, 1), num_classes=3,
                                    seed=2)
  return data_lib.build_federated_data(central, partition='iid',
                                       num_clients=4, seed=0)


@pytest.fixture(scope='module')
def small_written(tmp_path_factory):
  out = tmp_path_factory.mktemp('small') / 'data'
  data_lib.write_tfrecord(small_federated(), out)
  return out


@pytest.fixture
def small_copy(small_written, tmp_path):
  """A copy a test may damage."""
  return Path(shutil.copytree(small_written, tmp_path / 'data'))


def example(features):
  feature = {}
  for key, value in features.items():
    value = np.asarray(value) if not isinstance(value, bytes) else value
    if isinstance(value, bytes):
      feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[value]))
    elif value.dtype.kind == 'f':
      feature[key] = tf.train.Feature(float_list=tf.train.FloatList(
          value=value.ravel().tolist()))
    else:
      feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(
          value=value.ravel().tolist()))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def write_records(path, records):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)


def write_spec(directory, **fields):
  spec = dict(input_key='image', input_dtype='float32', input_shape=[2, 3, 1],
              label_key='label', num_classes=4)
  spec.update(fields)
  (directory / 'feature_spec.json').write_text(json.dumps(spec))


def test_small_round_trip_reads_back(small_written):
  expected = small_federated()
  got = data_lib.load_tfrecord(small_written)
  assert got.client_ids == expected.client_ids
  for cid in expected.client_ids:
    assert_same_elements(elements(got.train, cid),
                         elements(expected.train, cid))


def test_min_examples_drops_small_clients(small_written):
  expected = small_federated()
  sizes = [len(elements(expected.train, c)) for c in expected.client_ids]
  assert min(sizes) < max(sizes)
  got = data_lib.load_tfrecord(small_written, min_examples=max(sizes))
  assert got.client_ids == [c for c, n in zip(expected.client_ids, sizes)
                            if n == max(sizes)]
  assert got.summary.dropped == len(sizes) - len(got.client_ids)


def test_central_test_is_the_union_of_client_test_files(small_copy):
  (small_copy / 'central_test.tfrecord').unlink()
  expected = small_federated()
  got = data_lib.load_tfrecord(small_copy)
  union = [e for cid in expected.client_ids
           for e in elements(expected.test, cid)]
  np.testing.assert_array_equal(got.central_test[0],
                                np.stack([e['x'] for e in union]))
  np.testing.assert_array_equal(got.central_test[1],
                                np.array([e['y'] for e in union]))
  assert got.central_test[1].dtype == np.int32


def test_writer_refuses_a_non_empty_directory(small_copy):
  before = sorted(p.name for p in small_copy.iterdir())
  with pytest.raises(FileExistsError, match=str(small_copy)):
    data_lib.write_tfrecord(small_federated(), small_copy)
  assert sorted(p.name for p in small_copy.iterdir()) == before


def test_writer_leaves_nothing_when_it_fails(tmp_path, monkeypatch):
  written = []
  real = tfrecord_writer._write_records

  def fail_on_third(path, batches):
    if len(written) == 2:
      raise OSError('disk full')
    written.append(path)
    return real(path, batches)

  monkeypatch.setattr(tfrecord_writer, '_write_records', fail_on_third)
  with pytest.raises(OSError, match='disk full'):
    data_lib.write_tfrecord(small_federated(), tmp_path / 'out')
  assert len(written) == 2
  assert list(tmp_path.iterdir()) == []  # No output, no temporary directory.


# ---------------------------------------------------------------------------
# The sharded layout.


@pytest.mark.parametrize('dtype', ['float32', 'uint8', 'int64'])
def test_sharded_layout_with_a_client_id_feature(tmp_path, dtype):
  rng = np.random.default_rng(0)
  shards = {'train': 3, 'test': 2}
  written = collections.defaultdict(list)  # (split, client) -> [(x, y)]
  union = []
  for split, count in shards.items():
    for shard in range(count):
      records = []
      for _ in range(7):
        cid = str(rng.choice(['bob', 'alice', 'carol']))
        pixels = rng.integers(0, 256, (2, 3, 1), dtype=np.uint8)
        label = int(rng.integers(0, 4))
        stored = {'float32': pixels.astype(np.float32) / 255,
                  'uint8': pixels.tobytes(),
                  'int64': pixels.astype(np.int64)}[dtype]
        records.append(example({'image': stored, 'label': label,
                                'writer': cid.encode()}))
        # sources.py scales uint8 as float32 / 255; float inputs are as stored.
        x = pixels.astype(np.float32) / 255.0
        written[split, cid].append((x, label))
        if split == 'test':
          union.append((x, label))
      write_records(tmp_path / f'{split}-{shard:05d}-of-{count:05d}.tfrecord',
                    records)
  write_spec(tmp_path, input_dtype=dtype, client_id_key='writer')
  got = data_lib.load_tfrecord(tmp_path)
  assert got.client_ids == sorted({c for s, c in written if s == 'train'})
  assert got.element_spec == collections.OrderedDict(
      x=tf.TensorSpec((2, 3, 1), tf.float32), y=tf.TensorSpec((), tf.int32))
  assert got.train.element_type_structure == got.element_spec
  for cid in got.client_ids:
    for split in ('train', 'test'):
      expected = [collections.OrderedDict(x=x, y=np.int32(y))
                  for x, y in written[split, cid]]
      assert_same_elements(elements(getattr(got, split), cid), expected)
  np.testing.assert_array_equal(got.central_test[0],
                                np.stack([x for x, _ in union]))
  np.testing.assert_array_equal(got.central_test[1], [y for _, y in union])
  sizes = [len(written['train', c]) for c in got.client_ids]
  classes = [len({y for _, y in written['train', c]}) for c in got.client_ids]
  assert got.summary == data_lib.PartitionSummary.from_counts(
      np.array(sizes), float(np.mean(classes)), 0)


def test_sharded_layout_needs_client_id_key(tmp_path):
  for split in ('train', 'test'):
    write_records(tmp_path / f'{split}-0.tfrecord',
                  [example({'image': np.zeros(6, np.float32), 'label': 1})])
  write_spec(tmp_path)
  with pytest.raises(CorruptDatasetError) as err:
    data_lib.load_tfrecord(tmp_path)
  assert 'client_id_key' in str(err.value)
  assert str(tmp_path / 'feature_spec.json') in str(err.value)


def test_sharded_record_without_client_id(tmp_path):
  good = example({'image': np.zeros(6, np.float32), 'label': 1,
                  'writer': b'bob'})
  bad = example({'image': np.zeros(6, np.float32), 'label': 1})
  write_records(tmp_path / 'train-0.tfrecord', [good, good, bad])
  write_records(tmp_path / 'test-0.tfrecord', [good])
  write_spec(tmp_path, client_id_key='writer')
  with pytest.raises(CorruptDatasetError) as err:
    data_lib.load_tfrecord(tmp_path)
  message = str(err.value)
  assert str(tmp_path / 'train-0.tfrecord') in message
  assert "record 2 has no feature 'writer'" in message
  assert "client_id_key='writer'" in message


# ---------------------------------------------------------------------------
# Errors: each names the file and the key.


def test_missing_directory(tmp_path):
  with pytest.raises(DatasetNotFoundError,
                     match=f'^{tmp_path / "nowhere"}: no such directory'):
    data_lib.load_tfrecord(tmp_path / 'nowhere')


def test_missing_spec(small_copy):
  (small_copy / 'feature_spec.json').unlink()
  with pytest.raises(DatasetNotFoundError) as err:
    data_lib.load_tfrecord(small_copy)
  assert str(small_copy / 'feature_spec.json') in str(err.value)
  assert 'no such file' in str(err.value)


def test_spec_given_as_object_or_path(small_copy):
  spec = data_lib.FeatureSpec.from_json(small_copy / 'feature_spec.json')
  moved = small_copy.parent / 'spec.json'
  (small_copy / 'feature_spec.json').rename(moved)
  for given in (spec, moved, str(moved)):
    assert data_lib.load_tfrecord(small_copy, given).input_shape == (4, 4, 1)
  again = small_copy.parent / 'again.json'
  spec.to_json(again)
  assert data_lib.FeatureSpec.from_json(again) == spec


@pytest.mark.parametrize('text, names', [
    ('{"input_key": "x"', ['not a JSON file']),
    ('{"input_key": "x", "input_dtype": "float32", "input_shape": [4, 4, 1], '
     '"lable_key": "y", "num_classes": 3}', ["'lable_key'"]),
    ('{"input_key": "x", "input_dtype": "float32", "input_shape": [4, 4, 1], '
     '"num_classes": 3}', ["'label_key'", 'missing']),
    ('{"input_key": "x", "input_dtype": "float64", "input_shape": [4, 4, 1], '
     '"label_key": "y", "num_classes": 3}', ['input_dtype', "'float64'"]),
    ('{"input_key": "x", "input_dtype": "float32", "input_shape": [4, -4], '
     '"label_key": "y", "num_classes": 3}', ['input_shape', '-4']),
], ids=['not_json', 'unknown_field', 'missing_field', 'bad_dtype',
        'bad_shape'])
def test_invalid_spec_file(small_copy, text, names):
  (small_copy / 'feature_spec.json').write_text(text)
  with pytest.raises(CorruptDatasetError) as err:
    data_lib.load_tfrecord(small_copy)
  assert str(small_copy / 'feature_spec.json') in str(err.value)
  for name in names:
    assert name in str(err.value)


def test_no_client_files(tmp_path):
  write_spec(tmp_path)
  with pytest.raises(DatasetNotFoundError) as err:
    data_lib.load_tfrecord(tmp_path)
  assert str(tmp_path / 'train') in str(err.value)
  assert 'train-*.tfrecord' in str(err.value)


def test_early_check_names_the_layout_the_loader_reads(small_copy, tmp_path):
  assert presence.tfrecord_layout(small_copy) == presence.PER_CLIENT
  (small_copy / 'train-00000.tfrecord').write_bytes(b'')
  with pytest.raises(CorruptDatasetError, match='keep one layout'):
    presence.tfrecord_layout(small_copy)
  with pytest.raises(CorruptDatasetError, match='keep one layout'):
    data_lib.load_tfrecord(small_copy)
  write_spec(tmp_path)
  (tmp_path / 'train-00000.tfrecord').write_bytes(b'')
  assert presence.tfrecord_layout(tmp_path) == presence.SHARDED


def test_missing_test_file(small_copy):
  (small_copy / 'test' / '0002.tfrecord').unlink()
  with pytest.raises(DatasetNotFoundError) as err:
    data_lib.load_tfrecord(small_copy)
  assert str(small_copy / 'test' / '0002.tfrecord') in str(err.value)


@pytest.mark.parametrize('damage', ['garble', 'truncate'])
def test_corrupt_file(small_copy, damage):
  path = small_copy / 'train' / '0002.tfrecord'  # Not the first file read.
  raw = bytearray(path.read_bytes())
  if damage == 'garble':
    middle = len(raw) // 2
    raw[middle:middle + 8] = bytes(b ^ 0xFF for b in raw[middle:middle + 8])
  else:
    raw = raw[:-10]
  path.write_bytes(bytes(raw))
  with pytest.raises(CorruptDatasetError) as err:
    data_lib.load_tfrecord(small_copy)
  message = str(err.value)
  assert message.startswith(f'{path}: damaged or truncated TFRecord file')
  assert re.search(('corrupted' if damage == 'garble' else 'truncated')
                   + r' record at \d+\); rewrite the file$', message)
  assert 'function_node' not in message  # TF's decoration is stripped.


def test_record_that_is_not_an_example(small_copy):
  path = small_copy / 'test' / '0001.tfrecord'
  write_records(path, [b'\xff\xff\xff\xff'])
  with pytest.raises(CorruptDatasetError,
                     match=f'{path}: record 0 is not a serialized '
                     'tf.train.Example'):
    data_lib.load_tfrecord(small_copy)


@pytest.mark.parametrize('field, key', [('input_key', 'image'),
                                        ('label_key', 'label')])
def test_spec_key_not_in_records(small_copy, field, key):
  spec = json.loads((small_copy / 'feature_spec.json').read_text())
  spec[field] = key
  (small_copy / 'feature_spec.json').write_text(json.dumps(spec))
  with pytest.raises(CorruptDatasetError) as err:
    data_lib.load_tfrecord(small_copy)
  message = str(err.value)
  assert message.startswith(
      f"{small_copy / 'train' / '0000.tfrecord'}: record 0 has no feature "
      f"'{key}' ({field}='{key}' in {small_copy / 'feature_spec.json'})")
  assert "features are 'x', 'y'" in message


def test_wrong_shape(small_copy):
  spec = json.loads((small_copy / 'feature_spec.json').read_text())
  spec['input_shape'] = [4, 4, 3]
  (small_copy / 'feature_spec.json').write_text(json.dumps(spec))
  with pytest.raises(CorruptDatasetError) as err:
    data_lib.load_tfrecord(small_copy)
  assert str(err.value) == (
      f"{small_copy / 'train' / '0000.tfrecord'}: record 0: feature 'x' "
      'holds 16 values, but input_shape=(4, 4, 3) in '
      f"{small_copy / 'feature_spec.json'} needs 48")


def test_wrong_dtype(small_copy):
  spec = data_lib.FeatureSpec.from_json(small_copy / 'feature_spec.json')
  spec = data_lib.FeatureSpec(**{**spec.to_dict(), 'input_dtype': 'int64'})
  with pytest.raises(CorruptDatasetError) as err:
    data_lib.load_tfrecord(small_copy, spec)
  message = str(err.value)
  assert message.startswith(f"{small_copy / 'train' / '0000.tfrecord'}: "
                            "record 0: feature 'x' is of kind float_list, "
                            'but input_dtype=')
  assert "input_dtype='int64' in the FeatureSpec passed" in message


def test_bad_record_deep_in_a_later_file(small_copy):
  """Every record is checked, not just the first of each file."""
  path = small_copy / 'test' / '0003.tfrecord'
  records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
  assert len(records) > 3
  records[3] = example({'x': np.zeros(15, np.float32), 'y': 1})
  write_records(path, records)
  with pytest.raises(CorruptDatasetError) as err:
    data_lib.load_tfrecord(small_copy)
  assert str(err.value).startswith(
      f"{path}: record 3: feature 'x' holds 15 values, but input_shape")


@pytest.mark.parametrize('label', [7, -1])
def test_label_outside_the_classes(small_copy, label):
  path = small_copy / 'train' / '0001.tfrecord'
  records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
  records[2] = example({'x': np.zeros(16, np.float32), 'y': label})
  write_records(path, records)
  with pytest.raises(CorruptDatasetError) as err:
    data_lib.load_tfrecord(small_copy)
  assert str(err.value).startswith(
      f"{path}: record 2: label 'y' = {label} is not a class index in [0, 3) "
      f"(num_classes=3 in {small_copy / 'feature_spec.json'})")


def test_float_labels(tmp_path):
  for split in ('train', 'test'):
    (tmp_path / split).mkdir()
    write_records(tmp_path / split / 'a.tfrecord', [
        example({'image': np.full(6, 0.5, np.float32), 'label': 3.0})])
  write_spec(tmp_path, label_dtype='float32')
  (element,) = elements(data_lib.load_tfrecord(tmp_path).train, 'a')
  assert element['y'] == 3 and element['y'].dtype == np.int32
  write_records(tmp_path / 'test' / 'a.tfrecord', [
      example({'image': np.zeros(6, np.float32), 'label': 1.5})])
  with pytest.raises(CorruptDatasetError,
                     match=f"{tmp_path / 'test' / 'a.tfrecord'}: record 0: "
                     "label 'label' = 1.5 is not a class index"):
    data_lib.load_tfrecord(tmp_path)


def test_int64_input_outside_pixel_range(tmp_path):
  for split in ('train', 'test'):
    (tmp_path / split).mkdir()
    write_records(tmp_path / split / 'a.tfrecord', [
        example({'image': np.arange(6) * 51, 'label': 0})])  # 0..255.
  write_spec(tmp_path, input_dtype='int64')
  (element,) = elements(data_lib.load_tfrecord(tmp_path).train, 'a')
  np.testing.assert_array_equal(element['x'].ravel(),
                                np.arange(6, dtype=np.float32) * 51 / 255)
  write_records(tmp_path / 'train' / 'a.tfrecord', [
      example({'image': np.arange(6) * 60, 'label': 0})])  # Up to 300.
  with pytest.raises(CorruptDatasetError,
                     match=f"{tmp_path / 'train' / 'a.tfrecord'}: record 0: "
                     r"feature 'image' holds values outside \[0, 255\]"):
    data_lib.load_tfrecord(tmp_path)
