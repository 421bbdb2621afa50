"""Launcher runs shared by the launcher tests (each child process costs ~10 s of imports)."""

import dataclasses
import importlib.util
from pathlib import Path
import re
import subprocess
import sys

import pytest

from launcher_helpers import (KILLED_AFTER_ROUND, REPO, TIMEOUT, TINY_FLAGS,
                              TRAIN, child_env, run_script)


@dataclasses.dataclass
class LauncherRuns:
  full_dir: Path       # 6 rounds, uninterrupted.
  resumed_dir: Path    # Killed after the checkpoint of round 3, then resumed.
  full: subprocess.CompletedProcess
  killed_returncode: int
  killed_stderr: str
  killed_worker_pid: int | None
  resumed: subprocess.CompletedProcess


@pytest.fixture(scope='session')
def launcher_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('launcher_runs')
  full_dir, resumed_dir = root / 'full', root / 'resumed'
  logs = {}
  children = {}
  # The uninterrupted and the killed run go side by side.
  for name, run_dir, script in (
      ('full', full_dir, [TRAIN]),
      ('killed', resumed_dir, [KILLED_AFTER_ROUND, '3'])):
    logs[name] = (open(root / f'{name}.out', 'w+'), open(root / f'{name}.err', 'w+'))
    children[name] = subprocess.Popen(
        [sys.executable, *map(str, script), *TINY_FLAGS,
         f'--root_dir={run_dir}'],
        cwd=REPO, env=child_env(), stdout=logs[name][0], stderr=logs[name][1],
        text=True)
  codes = {name: child.wait(TIMEOUT) for name, child in children.items()}
  texts = {}
  for name, (out, err) in logs.items():
    out.seek(0)
    err.seek(0)
    texts[name] = (out.read(), err.read())
    out.close()
    err.close()
  match = re.search(r'Started TFF worker pid (\d+)', texts['killed'][1])
  resumed = run_script(TRAIN, *TINY_FLAGS, f'--root_dir={resumed_dir}')
  return LauncherRuns(
      full_dir=full_dir, resumed_dir=resumed_dir,
      full=subprocess.CompletedProcess([], codes['full'], *texts['full']),
      killed_returncode=codes['killed'], killed_stderr=texts['killed'][1],
      killed_worker_pid=int(match.group(1)) if match else None,
      resumed=resumed)


@pytest.fixture(scope='session')
def launcher():
  """launchers/train.py as a module, loaded once per test process: it defines
  absl flags, and a second load would define them twice."""
  spec = importlib.util.spec_from_file_location('feddst_train_launcher', TRAIN)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def parse(launcher):
  """Parses train.py's flags in-process; undone after the test."""
  def _parse(*argv):
    launcher.FLAGS(['train.py', *argv])
    return launcher

  yield _parse
  launcher.FLAGS.unparse_flags()
