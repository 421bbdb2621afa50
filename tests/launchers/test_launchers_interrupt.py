"""Ctrl-C and SIGTERM stop train.py with one line; rerunning resumes exactly."""

import re
import signal
import subprocess
import sys
import time

from launcher_helpers import (REPO, TIMEOUT, TINY_FLAGS, TRAIN, child_env,
                              process_alive, read_rows, run_script,
                              without_wall_clock)

from tff_feddst import program

LINE = re.compile(r'^Interrupted (during|after) round (\d+); the last '
                  r'checkpoint is round (\d+) — run the same command to '
                  r'resume\.$', re.MULTILINE)


def _checkpoints(root):
  """Versions of the complete checkpoints in `root`."""
  d = program.RunPaths.of(root).checkpoints
  if not d.exists():
    return []
  return sorted(int(m.group(1)) for p in d.iterdir()
                if (m := re.fullmatch(r'program_state_(\d+)', p.name)))


def test_signal_stops_with_one_line_and_the_same_command_resumes(
    launcher_runs, tmp_path):
  full_rows = without_wall_clock(read_rows(launcher_runs.full_dir))
  signals = (signal.SIGINT, signal.SIGTERM)
  commands = {s: [sys.executable, str(TRAIN), *TINY_FLAGS,
                  f'--root_dir={tmp_path / s.name}'] for s in signals}
  # Side by side; each gets its signal once its checkpoint of round 2 exists.
  children = {s: subprocess.Popen(commands[s], cwd=REPO, env=child_env(),
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
              for s in signals}
  try:
    deadline = time.monotonic() + TIMEOUT
    waiting = set(signals)
    while waiting:
      for s in list(waiting):
        assert children[s].poll() is None, f'{s.name} run ended unsignalled'
        if 2 in _checkpoints(tmp_path / s.name):
          children[s].send_signal(s)
          waiting.remove(s)
      assert time.monotonic() < deadline
      time.sleep(0.05)
    outputs = {s: children[s].communicate(timeout=TIMEOUT) for s in signals}
  finally:
    for child in children.values():
      child.kill()
      child.wait()

  for s in signals:
    root = tmp_path / s.name
    out, err = outputs[s]
    assert children[s].returncode == 128 + s, err[-3000:]
    assert 'Traceback' not in out + err, err[-3000:]
    assert 'gRPC' not in err, err[-3000:]  # No noise from the cut round.
    worker = int(re.search(r'Started TFF worker pid (\d+)', err).group(1))
    deadline = time.monotonic() + 10
    while process_alive(worker) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert not process_alive(worker), 'the worker outlived the launcher'
    lines = LINE.findall(err)
    assert len(lines) == 1, err[-3000:]
    assert err.count('Interrupted') == 1
    when, round_num, last = lines[0][0], int(lines[0][1]), int(lines[0][2])
    # checkpoint_every=1: the round before (or, after its release, this one)
    # is the last complete checkpoint, and nothing newer is half-written.
    expected_last = (round_num - 1,) if when == 'during' else (
        round_num - 1, round_num)
    assert last in expected_last and last >= 2, lines
    assert _checkpoints(root)[-1] == last
    assert not [p for p in program.RunPaths.of(root).checkpoints.iterdir()
                if 'temp' in p.name]
    released = round_num if when == 'after' else round_num - 1
    assert [r['round'] for r in read_rows(root)] == [
        str(r) for r in range(1, released + 1)]
    assert program.load_model_weights(root)[1] == last

    resumed = run_script(*commands[s][1:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'after round {last} ' in resumed.stderr
    assert without_wall_clock(read_rows(root)) == full_rows
