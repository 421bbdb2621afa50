"""train.py with --client_density_budgets: one tiny run (child process) and
the flag's refusals (in-process)."""


from absl import flags
import pytest

from launcher_helpers import TRAIN, read_rows, run_script
from tff_feddst import program

BUDGET_FLAGS = [
    '--dataset=digits', '--model=mlp', '--total_clients=10',
    '--clients_per_round=4', '--rounds=2', '--client_epochs=1',
    '--batch_size=16', '--eval_every=2', '--seed=3', '--algorithm=feddst',
    '--sparsity=0.8', '--readjustment_ratio=0.2',
    '--rounds_between_readjustments=1',
    '--client_density_budgets=0.05:0.3,0.1:0.3,0.2:0.4',
]
LABELS = ('0.05', '0.1', '0.2')


# ~25 CPU-s of launcher child: `-m slow`. By default the per-group columns come
# from program.train in-process (tests/program/test_budgets_train_loop.py) and
# the flag's parsing and refusals are checked below.
@pytest.mark.slow
def test_budget_run_writes_per_group_columns(tmp_path):
  result = run_script(TRAIN, *BUDGET_FLAGS, f'--root_dir={tmp_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert ('Client density budgets: 0.05: 3 clients, 0.1: 3 clients, 0.2: 4 '
          'clients') in result.stderr
  rows = read_rows(tmp_path)
  assert [r['round'] for r in rows] == ['1', '2']
  for row in rows:
    assert sum(int(row[f'round/budget/{b}/clients']) for b in LABELS) == 4
    for b in LABELS:
      assert row[f'round/budget/{b}/over_budget_clients'] == '0'
  assert all(rows[1][f'test/budget/{b}/client_mean_accuracy'] for b in LABELS)
  assert program.read_hparams(tmp_path)['client_density_budgets'] == (
      '0.05:0.3,0.1:0.3,0.2:0.4')




@pytest.mark.parametrize('argv,message', [
    (['--client_density_budgets=0.1:0.5,0.2:0.4'],
     '--client_density_budgets: the fractions sum to 0.9'),
    (['--client_density_budgets=0.1:0.5,0.3:0.5'],
     '--client_density_budgets: budget 0.3 is above the global density '
     '1 - --sparsity = 0.2'),
    (['--client_density_budgets=0:1'], 'density 0 is outside'),
    (['--client_density_budgets=0.1-1'], "cannot read '0.1-1'"),
    (['--algorithm=fedavg', '--client_density_budgets=0.1:1'],
     '--client_density_budgets applies only to --algorithm'),
    (['--sparsity=0', '--client_density_budgets=0.1:1'],
     '--client_density_budgets needs a sparse model'),
])
def test_refused_budgets_name_the_flag(parse, argv, message):
  with pytest.raises(flags.IllegalFlagValueError, match='client_density') as e:
    parse(*argv)
  assert message in str(e.value)


def test_budgets_resolve_to_canonical_text(parse):
  hp = parse('--algorithm=random_mask',
             '--client_density_budgets=0.2:0.5, 0.1:0.5').resolve_hparams()
  assert hp['client_density_budgets'] == '0.1:0.5,0.2:0.5'
