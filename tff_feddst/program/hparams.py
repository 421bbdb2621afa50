"""A run's hyperparameters, written once to `root_dir/hparams.json`.

Restarting a run in the same root directory resumes it, so the restart must
describe the same experiment: `write_or_check_hparams` refuses to continue
when any hyperparameter that changes the results differs from the recorded
ones, and lists every differing key with its old and new value.

Keys in `RESULT_NEUTRAL_KEYS` may change between restarts. They say where
files live (`root_dir`, `data_dir`), which machines compute (`workers`; the
clients' results do not depend on it), how often evaluation and checkpoints
happen (`eval_every`, `checkpoint_every`, `keep_checkpoints`,
`eval_batch_size`; evaluation does not touch the training state), and how
long to train (`rounds`, `upload_cap_mb`: extending a finished run is
allowed; every round's result is the same whatever the length). The file
keeps the values of the first start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from typing import Any

from tff_feddst.program import paths

RESULT_NEUTRAL_KEYS = frozenset({
    'root_dir', 'data_dir', 'workers', 'eval_every', 'checkpoint_every',
    'keep_checkpoints', 'eval_batch_size', 'rounds', 'upload_cap_mb',
})
_ABSENT = '<absent>'


class HparamsMismatchError(ValueError):
  """The root directory holds a run with other hyperparameters."""


def _normalized(hparams: Mapping[str, Any]) -> dict[str, Any]:
  """JSON round trip: what will be compared is what the file can hold."""
  try:
    return json.loads(json.dumps(dict(hparams), sort_keys=True))
  except TypeError as e:
    raise TypeError(f'hyperparameters must be JSON-serializable: {e}') from e


def read_hparams(root_dir: str | os.PathLike) -> dict[str, Any] | None:
  """The recorded hyperparameters of the run in `root_dir`, or None."""
  path = paths.RunPaths.of(root_dir).hparams
  if not path.exists():
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any], *,
                   neutral_keys: Collection[str] = RESULT_NEUTRAL_KEYS
                   ) -> dict[str, tuple[Any, Any]]:
  """{key: (old, new)} for every result-changing key whose value differs."""
  old, new = _normalized(old), _normalized(new)
  keys = sorted((set(old) | set(new)) - set(neutral_keys))
  # A key that one side lacks and the other holds as None (an option added
  # later, unused) is no difference: runs recorded before it still resume.
  return {k: (old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in keys
          if old.get(k) != new.get(k)}


def check_hparams(root_dir: str | os.PathLike, hparams: Mapping[str, Any], *,
                  neutral_keys: Collection[str] = RESULT_NEUTRAL_KEYS) -> None:
  """Raises `HparamsMismatchError` if `root_dir` records other hyperparameters."""
  old = read_hparams(root_dir)
  if old is None:
    return
  diff = differing_keys(old, hparams, neutral_keys=neutral_keys)
  if diff:
    lines = '\n'.join(f'  {k}: {o!r} (recorded) != {n!r} (this run)'
                      for k, (o, n) in diff.items())
    raise HparamsMismatchError(
        f'{paths.RunPaths.of(root_dir).hparams} records a run with other '
        f'hyperparameters, so this run cannot resume it:\n{lines}\n'
        'Use another root directory, or the recorded values.')


def write_or_check_hparams(root_dir: str | os.PathLike,
                           hparams: Mapping[str, Any], *,
                           neutral_keys: Collection[str] = RESULT_NEUTRAL_KEYS
                           ) -> dict[str, Any]:
  """Records `hparams` on the first start; later checks them (see module doc).

  Returns the recorded hyperparameters.
  """
  check_hparams(root_dir, hparams, neutral_keys=neutral_keys)
  recorded = read_hparams(root_dir)
  if recorded is None:
    recorded = _normalized(hparams)
    paths.write_atomic(paths.RunPaths.of(root_dir).hparams,
                       json.dumps(recorded, indent=2, sort_keys=True) + '\n')
  return recorded
