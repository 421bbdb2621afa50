"""Whether a dataset's files are where a run will look, answered without TensorFlow.

The training launcher asks before it imports TensorFlow (~10 s), so that a
missing dataset is refused at once, with every path tried; the loaders ask the
same functions, so the early answer and the loader's never disagree. Nothing
here reads a file's contents: damaged files are the loaders' to report.
"""

from __future__ import annotations

import os
from pathlib import Path

from tff_feddst.data import sources
from tff_feddst.data.sources import CorruptDatasetError, DatasetNotFoundError

EMNIST_FILENAME = 'emnist_all.sqlite'
_EMNIST_ORIGIN = ('https://storage.googleapis.com/tff-datasets-public/'
                  'emnist_all.sqlite.lzma')
SPEC_FILENAME = 'feature_spec.json'
SUFFIX = '.tfrecord'
PER_CLIENT, SHARDED = 'per_client', 'sharded'


def emnist_file(cache_dir: str | os.PathLike | None) -> Path:
  """TFF's federated EMNIST file in `cache_dir` (default TFF's cache, ~/.tff)."""
  cache_dir = Path(cache_dir if cache_dir is not None else os.path.
                   join(os.path.expanduser('~'), '.tff')).expanduser()
  path = cache_dir / EMNIST_FILENAME
  if not path.is_file():
    raise DatasetNotFoundError(
        f'Federated EMNIST not found. Path tried:\n  {path}  (no such file)\n'
        f'Download {_EMNIST_ORIGIN}, decompress it (`unxz emnist_all.sqlite.lzma` or '
        f'`xz -d --format=lzma`), and put {EMNIST_FILENAME} in {cache_dir} (or pass the '
        'directory holding it as the cache dir).')
  return path


def feature_spec_file(path: str | os.PathLike) -> Path:
  """`path` if it is a file; else names what a TFRecord feature spec holds."""
  path = Path(path).expanduser()
  if not path.is_file():
    raise DatasetNotFoundError(
        f'{path}: no such file; a TFRecord dataset needs a feature spec, '
        f'e.g. {{"input_key": "x", "input_dtype": "float32", "input_shape": '
        f'[28, 28, 1], "label_key": "y", "num_classes": 10}}')
  return path


def tfrecord_layout(data_dir: str | os.PathLike, *,
                    spec_file: str | os.PathLike | None = SPEC_FILENAME) -> str:
  """`PER_CLIENT` or `SHARDED`: which layout (tfrecord.py's doc) `data_dir` holds.

  Checks, in this order, the directory, the spec file (`spec_file`, relative
  to `data_dir` unless absolute; None: not checked) and the client files.
  """
  data_dir = Path(data_dir).expanduser().absolute()
  if not data_dir.is_dir():
    raise DatasetNotFoundError(f'{data_dir}: no such directory (expected a '
                               'TFRecord dataset directory)')
  if spec_file is not None:
    feature_spec_file(data_dir / Path(spec_file).expanduser())
  has_shards = any(p.is_file() for p in data_dir.glob(f'train-*{SUFFIX}'))
  per_client = (data_dir / 'train').is_dir()
  if per_client and has_shards:
    raise CorruptDatasetError(
        f'{data_dir} holds both a train/ directory and train-*{SUFFIX} '
        'shards; keep one layout')
  if per_client:
    return PER_CLIENT
  if has_shards:
    return SHARDED
  raise DatasetNotFoundError(
      f'{data_dir}: no client data. Paths tried:\n'
      f'  {data_dir / "train"}/<client_id>{SUFFIX}  (no such directory)\n'
      f'  {data_dir}/train-*{SUFFIX}  (no such files)')


def check(dataset: str, data_dir: str | os.PathLike | None) -> None:
  """Raises what loading `dataset` (a launcher's --dataset) would raise for
  files that are not there (`DatasetNotFoundError`) or a TFRecord directory
  with two layouts (`CorruptDatasetError`)."""
  if dataset == 'emnist':
    emnist_file(data_dir)
  elif dataset == 'tfrecord':
    tfrecord_layout(data_dir)
  else:
    sources.locate(dataset, data_dir)
