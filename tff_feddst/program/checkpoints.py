"""Checkpoints of a training run: process state, counters, final weights.

`train_loop` saves (process state, counters) every `checkpoint_every`
rounds with tff.program's `FileProgramStateManager` in `checkpoints/`, and
the global weights beside them in `model_weights.npz` (readable without the
process, e.g. by the exporter); a restart resumes from the newest checkpoint.
Kept apart from the loop so that the resume and damage rules are read in one
place.

Damaged checkpoints. A crash or a full disk during a save can leave the latest
checkpoint truncated (TF's reader then raises IndexError, DataLossError,
OSError, ...). The run resumes from the newest checkpoint that loads, with a
warning naming each damaged one, which is moved aside to
`checkpoints/damaged_program_state_N` (kept for inspection; its version is
saved again when the run gets there). Resuming from an older round is
`train_loop`'s ordinary resume: the CSV rows after it are replaced as the
rounds are run again. When
checkpoints exist but none loads (also what another version of this code
would see), `NoUsableCheckpointError` names the directory and nothing is
moved.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
import shutil
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.program import interrupts
from tff_feddst.program import paths

STATE_PREFIX = 'program_state_'  # FileProgramStateManager's, made explicit.
_DAMAGED_PREFIX = 'damaged_'


class NoUsableCheckpointError(RuntimeError):
  """The run directory holds checkpoints, but none of them loads."""


def counters(round_num: int = 0,
             elapsed: float = 0.0) -> collections.OrderedDict:
  """Program counters checkpointed beside the process state.

  The bytes uploaded are not among them: the process's state counts them.
  """
  return collections.OrderedDict(round=np.int64(round_num),
                                 elapsed_seconds=np.float64(elapsed))


def save_model_weights(path, weights: tff.learning.models.ModelWeights,
                       round_num: int) -> None:
  """Writes `weights` (and the round they are from) to an .npz, atomically."""
  arrays = {f'trainable_{i:03d}': np.asarray(w)
            for i, w in enumerate(weights.trainable)}
  arrays.update({f'non_trainable_{i:03d}': np.asarray(w)
                 for i, w in enumerate(weights.non_trainable)})
  paths.savez_atomic(path, round=np.int64(round_num), **arrays)


def load_model_weights(root_dir) -> tuple[tff.learning.models.ModelWeights, int]:
  """The final global weights of the run in `root_dir`, and their round."""
  with np.load(paths.RunPaths.of(root_dir).model_weights) as f:
    def ordered(prefix):
      return [f[k] for k in sorted(k for k in f.files if k.startswith(prefix))]
    return (tff.learning.models.ModelWeights(
        ordered('trainable_'), ordered('non_trainable_')), int(f['round']))


def state_manager(run_paths: paths.RunPaths,
                  keep: int) -> tff.program.FileProgramStateManager:
  """The manager of the run's checkpoints, keeping the latest `keep`."""
  return tff.program.FileProgramStateManager(
      str(run_paths.checkpoints), prefix=STATE_PREFIX, keep_total=keep,
      keep_first=False)


def _set_aside_damaged(checkpoints: Path, version: int, reason: str,
                       resumed_version: int) -> None:
  """Moves checkpoint `version` out of the state manager's sight."""
  source = checkpoints / f'{STATE_PREFIX}{version}'
  target = checkpoints / f'{_DAMAGED_PREFIX}{source.name}'
  if target.exists():
    shutil.rmtree(target)
  source.rename(target)
  logging.warning('Checkpoint %s is damaged (%s); resuming from the one of '
                  'round %d instead. Moved the damaged one to %s.', source,
                  reason, resumed_version, target)


def restore(state_manager: tff.program.FileProgramStateManager, template,
             checkpoints: Path) -> tuple[Any, int, list[int]]:
  """Loads the newest checkpoint that loads (see "Damaged checkpoints").

  Returns:
    (program state, version, versions set aside as damaged); the state is None
    and the version 0 when there is no checkpoint.

  Raises:
    NoUsableCheckpointError: there are checkpoints, and none loads.
  """
  versions = asyncio.run(state_manager.get_versions()) or []
  failures: list[tuple[int, str]] = []
  for version in reversed(versions):
    try:
      restored = _load(state_manager, version, template)
    except Exception as e:  # pylint: disable=broad-except
      # TF's readers fail on damaged files in many ways (IndexError,
      # DataLossError, OSError, OpError, ...).
      reason = f'{type(e).__name__}: {e}'
      failures.append((version, reason[:300]))
      continue
    with interrupts.held():
      for damaged, reason in failures:
        _set_aside_damaged(checkpoints, damaged, reason, version)
    return restored, version, [v for v, _ in failures]
  if failures:
    listing = '; '.join(f'{STATE_PREFIX}{v}: {r}' for v, r in failures)
    raise NoUsableCheckpointError(
        f'None of the {len(failures)} checkpoints in {checkpoints} loads '
        f'(newest first: {listing}). If another version of tff_feddst wrote '
        'them, resume with that version; if they are damaged, move them away '
        'to start the run again.')
  return None, 0, []


def _load(state_manager, version: int, template):
  """Checkpoint `version` as (state, counters)."""
  loaded = asyncio.run(state_manager.load(version, template))
  _check_same_arrays(loaded[0], template[0])
  return loaded


def _check_same_arrays(state, template):
  """Refuses a loaded state whose arrays differ in shape or dtype from the
  process's (TFF's loader packs any arrays into the structure; another
  version's state would fail later, deep in TFF's serializer)."""
  got_arrays, want_arrays = tf.nest.flatten(state), tf.nest.flatten(template)
  if len(got_arrays) != len(want_arrays):
    raise ValueError(f'its state has {len(got_arrays)} arrays, this process '
                     f'{len(want_arrays)}')
  for i, (got, want) in enumerate(zip(got_arrays, want_arrays)):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
      raise ValueError(
          f'its state array {i} is {got.dtype}{list(got.shape)}, this '
          f'process expects {want.dtype}{list(want.shape)}')


def save(state_manager: tff.program.FileProgramStateManager,
                     run_paths: paths.RunPaths, program_state, round_num: int,
                     weights: tff.learning.models.ModelWeights) -> None:
  """Saves checkpoint `round_num` and the weights beside it."""
  asyncio.run(state_manager.save(program_state, round_num))
  # The latest checkpoint's weights, readable without the process (export).
  save_model_weights(run_paths.model_weights, weights, round_num)
