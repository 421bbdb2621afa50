"""train.py with --algorithm=flash_jmwst and flash_spdst (the latter with
per-client density budgets): tiny runs in child processes, resumed exactly
from the checkpoint of round 1 (stage 1) (one local epoch: the DST event
comes after it; tests/algorithms covers E > 1); the flags' refusals
in-process."""

import shutil
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from launcher_helpers import (REPO, TIMEOUT, TRAIN, child_env, read_rows,
                              without_wall_clock)
from tff_feddst import program

ROUNDS = 2
FLASH_FLAGS = [
    '--dataset=digits', '--model=mlp', '--total_clients=10',
    '--clients_per_round=3', f'--rounds={ROUNDS}', '--client_epochs=1',
    '--batch_size=16', '--client_learning_rate=0.05', '--sparsity=0.8',
    '--eval_every=2', '--checkpoint_every=1', '--seed=3',
]
ALGORITHMS = {
    'flash_jmwst': ['--algorithm=flash_jmwst', '--flash_prune_rate=0.3'],
    'flash_spdst': ['--algorithm=flash_spdst',
                    '--client_density_budgets=0.1:0.5,0.2:0.5'],
}


def _spawn(argv, log_dir, name):
  out = open(log_dir / f'{name}.out', 'w+')
  err = open(log_dir / f'{name}.err', 'w+')
  child = subprocess.Popen([sys.executable, str(TRAIN), *argv], cwd=REPO,
                           env=child_env(), stdout=out, stderr=err, text=True)
  return child, out, err


def _collect(children):
  results = {}
  for name, (child, out, err) in children.items():
    code = child.wait(TIMEOUT)
    out.seek(0)
    err.seek(0)
    results[name] = subprocess.CompletedProcess([], code, out.read(),
                                                err.read())
    out.close()
    err.close()
  return results


@pytest.fixture(scope='module')
def flash_runs(tmp_path_factory):
  """{algorithm: (full dir, resumed dir, {full, resumed} results)}.

  Two children per algorithm (each costs ~25 CPU-s): the full run, then a
  run resumed from a copy of its directory without the last checkpoint, so
  that it restarts from the state saved after round 1 (stage 1). The
  SIGKILL path of the same train loop is tests/launchers/
  test_launchers_train.py's; what is FLASH's here is its process state.
  """
  root = tmp_path_factory.mktemp('flash_runs')
  full = _collect({a: _spawn(FLASH_FLAGS + extra + [
      f'--root_dir={root / a / "full"}'], root, f'{a}_full')
                   for a, extra in ALGORITHMS.items()})
  for a in ALGORITHMS:
    if full[a].returncode == 0:
      shutil.copytree(root / a / 'full', root / a / 'resumed')
      shutil.rmtree(root / a / 'resumed' / 'checkpoints' /
                    f'program_state_{ROUNDS}')
  resumed = _collect({a: _spawn(FLASH_FLAGS + extra + [
      f'--root_dir={root / a / "resumed"}'], root, f'{a}_resumed')
                      for a, extra in ALGORITHMS.items()
                      if full[a].returncode == 0})
  return {a: (root / a / 'full', root / a / 'resumed',
              {'full': full[a], 'resumed': resumed.get(a)})
          for a in ALGORITHMS}


# Four launcher runs (~85 s): in the slow set (`uv run pytest -m slow`), so the
# default suite keeps to its time budget; the resume path itself is the train
# loop's, tested by default for FedDST.
@pytest.mark.slow
@pytest.mark.parametrize('algorithm', sorted(ALGORITHMS))
def test_flash_run_checkpoints_and_resumes_exactly(flash_runs, algorithm):
  full_dir, resumed_dir, runs = flash_runs[algorithm]
  assert runs['full'].returncode == 0, runs['full'].stderr[-3000:]
  resumed = runs['resumed']
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resuming' in resumed.stderr and 'after round 1' in resumed.stderr
  full_rows, resumed_rows = read_rows(full_dir), read_rows(resumed_dir)
  assert [r['round'] for r in full_rows] == ['1', '2']
  assert without_wall_clock(resumed_rows) == without_wall_clock(full_rows)
  full_weights, full_round = program.load_model_weights(full_dir)
  resumed_weights, resumed_round = program.load_model_weights(resumed_dir)
  assert full_round == resumed_round == 2
  for a, b in zip(full_weights.trainable + full_weights.non_trainable,
                  resumed_weights.trainable + resumed_weights.non_trainable):
    np.testing.assert_array_equal(a, b)
  assert program.read_hparams(full_dir)['algorithm'] == algorithm
  # Stage 1 is the first round; the density never exceeds 1 - S.
  assert [r['finalizer/stage_one'] for r in full_rows] == ['1', '0']
  assert all(float(r['density/total']) <= 0.2 + 1e-6 for r in full_rows)
  if algorithm == 'flash_jmwst':
    # The mask moved after the resume point: the comparison is not trivial.
    assert all(r['round/readjusted'] == '1' for r in full_rows)
    assert int(full_rows[1]['finalizer/mask_swaps']) > 0
  else:
    assert [r['round/readjusted'] for r in full_rows] == ['1', '0']
    assert full_rows[1]['finalizer/mask_swaps'] == '0'
    for row in full_rows:  # hetero-FLASH: every client within its budget.
      assert row['round/budget/0.1/over_budget_clients'] == '0'
      assert row['round/budget/0.2/over_budget_clients'] == '0'
      assert (int(row['round/budget/0.1/clients']) +
              int(row['round/budget/0.2/clients'])) == 3


@pytest.mark.parametrize('argv,message', [
    (['--algorithm=flash_jmwst', '--flash_prune_rate=0'],
     '--flash_prune_rate must be in (0, 1], got 0.0'),
    (['--algorithm=flash_spdst', '--flash_prune_rate=1.5'],
     '--flash_prune_rate must be in (0, 1]'),
    (['--algorithm=flash_spdst', '--sparsity=0'],
     '--sparsity must be > 0 for FLASH'),
    (['--algorithm=flash_spdst', '--readjustment_schedule=cosine'],
     '--readjustment_schedule applies only to'),
    (['--algorithm=flash_jmwst', '--readjustment_ratio=0.1'],
     '--readjustment_ratio applies only to'),
    (['--algorithm=feddst', '--flash_prune_rate=0.3'],
     '--flash_prune_rate applies only to --algorithm flash_spdst|flash_jmwst'),
    (['--algorithm=flash_jmwst', '--dp_noise_multiplier=1',
      '--dp_clip_norm=1'], '--dp_noise_multiplier cannot be used with FLASH'),
    (['--algorithm=flash_jmwst', '--client_density_budgets=0.3:1'],
     'budget 0.3 is above the global density'),
])
def test_bad_flash_flags_are_refused_naming_the_flag(parse, argv, message):
  with pytest.raises(flags.IllegalFlagValueError) as e:
    parse(*argv)
  assert message in str(e.value)


def test_flash_defaults(parse):
  hp = parse('--algorithm=flash_jmwst', '--rounds=30').resolve_hparams()
  assert (hp['flash_prune_rate'], hp['readjustment_schedule'],
          hp['readjustment_end_round']) == (0.25, 'constant', 30)
  hp = parse('--algorithm=flash_spdst').resolve_hparams()
  assert hp['flash_prune_rate'] == 0.25
  assert hp['readjustment_schedule'] is None
