"""examples/tff_program.py: FedDST and FLASH under TFF's program logic,
killed and resumed from TFF's own program state."""

import csv
import os
import re
import signal
import subprocess
import sys
import time

import pytest

_EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'examples', 'tff_program.py')


def _command(root, *flags):
  return [sys.executable, _EXAMPLE, f'--root_dir={root}', *flags]


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')


def _keys(path):
  with open(path, newline='') as f:
    return [int(row['key']) for row in csv.DictReader(f)]


def _saved_versions(root):
  state = os.path.join(root, 'program_state')
  if not os.path.isdir(state):
    return []
  return sorted(int(m.group(1)) for n in os.listdir(state)
                if (m := re.fullmatch(r'program_state_(\d+)', n)))


def test_feddst_killed_and_resumed_from_tffs_program_state(tmp_path):
  root = str(tmp_path / 'run')
  flags = ['--rounds=3', '--eval_every=3']
  proc = subprocess.Popen(_command(root, *flags), env=_env(),
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 400
    while not any(v >= 1 for v in _saved_versions(root)):
      assert proc.poll() is None, 'the example ended before round 1 was saved'
      assert time.monotonic() < deadline, 'no program state after 400 s'
      time.sleep(0.2)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  killed_at = max(_saved_versions(root))
  assert killed_at < 3, 'killed too late to show a resume'
  done = subprocess.run(_command(root, *flags), env=_env(), capture_output=True,
                        text=True, timeout=600, stdin=subprocess.DEVNULL,
                        check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  found = re.search(r'Found previous program state version (\d+)', done.stderr)
  assert found and int(found.group(1)) >= killed_at, done.stderr[-3000:]
  assert max(_saved_versions(root)) == 3
  # Rounds after the resumed version were trained once more; every round was
  # released, and the final evaluation ran on round 3.
  assert set(_keys(os.path.join(root, 'train.csv'))) == {1, 2, 3}
  assert 3 in _keys(os.path.join(root, 'evaluation.csv'))
  assert os.listdir(os.path.join(root, 'model_output'))


def test_flash_trains_under_tffs_program_logic(tmp_path):
  root = str(tmp_path / 'flash')
  done = subprocess.run(
      _command(root, '--algorithm=flash_jmwst', '--rounds=2', '--eval_every=2'),
      env=_env(), capture_output=True, text=True, timeout=600,
      stdin=subprocess.DEVNULL, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(root, 'train.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert [int(r['key']) for r in rows] == [1, 2]
  assert all(float(r['client_work/round/uplink_bytes']) > 0 for r in rows)
  assert _keys(os.path.join(root, 'evaluation.csv')) == [2]


@pytest.mark.parametrize('flag, message', [
    ('--sparsity=1.5', '--sparsity must be'),
    ('--client_density_budgets=0.1:1', 'cannot run under TFF 0.87'),
])
def test_refusals_name_the_flag_without_a_traceback(tmp_path, flag, message):
  done = subprocess.run(
      _command(str(tmp_path / 'x'), flag), env=_env(),
      capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
      check=False)
  assert done.returncode != 0
  assert message in done.stderr and 'Traceback' not in done.stderr
  assert not (tmp_path / 'x').exists()  # Nothing written.
