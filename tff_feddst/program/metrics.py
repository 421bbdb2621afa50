"""A round's nested process metrics as flat scalar columns ('train/loss', ...).

The learning process reports
`{distributor, client_work: {train, round}, aggregator, finalizer}`; the flat
names drop the `client_work/` level (`train/...`, `round/...`), rename Keras'
`sparse_categorical_accuracy` to `accuracy`, and spell the finalizer's
densities as `density/total` and `density/<kernel name>` (e.g.
`density/fc1/kernel`). `round/round_num` (0-based) is dropped: the release key
is the 1-based round. Booleans become 0/1. Byte counts are reported in MB
of `BYTES_PER_MB` bytes (logs, plots, docs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BYTES_PER_MB = 1e6  # 1 MB = 10**6 bytes wherever the project reports MB.

_PREFIX_RENAMES = (
    ('client_work/train/', 'train/'),
    ('client_work/round/', 'round/'),
    ('finalizer/layer_density', 'density'),
    ('finalizer/density', 'density/total'),
)
_NAME_RENAMES = {'sparse_categorical_accuracy': 'accuracy'}
_DROPPED = frozenset({'round/round_num'})


def _scalar(value: Any) -> int | float:
  value = np.asarray(value)
  if value.dtype.kind == 'b':
    return int(value)
  if value.dtype.kind in 'iu':
    return int(value)
  return float(value)


def _rename(path: str) -> str:
  for old, new in _PREFIX_RENAMES:
    if path == old or (old.endswith('/') and path.startswith(old)):
      path = new + path[len(old):]
      break
  head, _, name = path.rpartition('/')
  name = _NAME_RENAMES.get(name, name)
  return f'{head}/{name}' if head else name


def flatten_metrics(metrics: Mapping[str, Any], *,
                    kernel_names: Sequence[str] = ()) -> dict[str, int | float]:
  """Flat {name: Python scalar}; vector metrics get one column per entry.

  `kernel_names` name the entries of the per-layer density vector; without
  them (or if the lengths differ) the entries are numbered.
  """
  flat: dict[str, int | float] = {}

  def visit(prefix: str, value: Any) -> None:
    if isinstance(value, Mapping):
      for key, item in value.items():
        visit(f'{prefix}{key}/', item)
      return
    if isinstance(value, (list, tuple)) and not hasattr(value, '_fields'):
      value = np.asarray(value)
    if hasattr(value, '_asdict'):
      visit(prefix, value._asdict())
      return
    name = _rename(prefix.rstrip('/'))
    if name in _DROPPED:
      return
    array = np.asarray(value)
    if array.ndim == 0:
      flat[name] = _scalar(array)
      return
    entries = array.reshape(-1)
    labels = (list(kernel_names) if name == 'density' and
              len(kernel_names) == entries.size
              else [str(i) for i in range(entries.size)])
    for label, entry in zip(labels, entries):
      flat[f'{name}/{label}'] = _scalar(entry)

  visit('', metrics)
  return flat
