"""Reproduces the paper's comparison on Fashion-MNIST, resumably.

Runs each algorithm through `launchers/train.py` with the paper's client
settings on one fixed partition (400 clients, Dirichlet β=0.1, 20 per round,
10 local epochs, batch 32, SGD lr 0.01 momentum 0.9, L2 1e-3), one run
directory per algorithm under --root_dir. A run that is complete is skipped;
an interrupted one resumes from its latest checkpoint, so this can be stopped
and started again at any time:

  nohup uv run python benchmarks/reproduce.py > repro.log 2>&1 &

`--report` then writes the tables (--page, by default docs/results.md) and,
in docs/reproduce/seed<N>/, the plots and results_summary.json from the CSVs.
Data: `apt-get install dataset-fashion-mnist` (or --data_dir).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
from benchmarks import report_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

SHOWN_ROOT = 'runs/reproduce'  # The docs' commands show the runs here.
_ROOT = flags.DEFINE_string('root_dir', SHOWN_ROOT,
                            'One run directory per algorithm below this.')
_ROUNDS = flags.DEFINE_integer('rounds', 150, 'Rounds per algorithm.')
_SEED = flags.DEFINE_integer('seed', 0, 'Partition and init seed.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Fashion-MNIST files.')
_ALGORITHMS = flags.DEFINE_list(
    'algorithms', ['feddst', 'fedavg', 'random_mask', 'fedavgm', 'fedprox',
                   'feddst_prox'], 'Which runs, in this order.')
_REPORT = flags.DEFINE_bool('report', False,
                            'Write --page and plots from the runs.')
_DOCS = flags.DEFINE_string('docs_dir', os.path.join(_REPO, 'docs'),
                            'Where --report writes.')
_PAGE = flags.DEFINE_string('page', 'results.md',
                            "--report's page, relative to --docs_dir.")
_BUDGETS_MB = (100, 200, 400)
_AT_ROUNDS = (50, 100, 150)
# Single evaluations at beta=0.1 swing by several points; the mean over the
# last third of the rounds is the steadier equal-rounds comparison.
_TAIL_FROM = 101
# Differences within this are called level in the verdicts.
_LEVEL = 0.01
NOTES_MARKER = report_lib.NOTES_MARKER

PAPER = list(report_lib.PAPER_FLAGS)
# Sparse runs upload ~4 MB per round, dense ones ~21 MB: dense runs are
# evaluated every 4 rounds so that the 100/200 MB budgets see an evaluation.
EVAL_EVERY = {'fedavg': 4, 'fedavgm': 4, 'fedprox': 4}
PER_ALGORITHM = {
    'fedavg': [],
    'fedavgm': ['--server_momentum=0.9'],
    'fedprox': ['--prox_mu=1.0'],
    'random_mask': ['--sparsity=0.8'],
    'feddst': ['--sparsity=0.8', '--readjustment_ratio=0.05',
               '--rounds_between_readjustments=10'],
    'feddst_prox': ['--sparsity=0.8', '--readjustment_ratio=0.05',
                    '--rounds_between_readjustments=10', '--prox_mu=1.0'],
}


def run_dir(algorithm: str) -> str:
  return os.path.join(_ROOT.value, f'seed{_SEED.value}', algorithm)


def command(algorithm: str) -> list[str]:
  args = [sys.executable, os.path.join(_REPO, 'launchers', 'train.py'),
          f'--algorithm={algorithm}', f'--rounds={_ROUNDS.value}',
          f'--seed={_SEED.value}', f'--root_dir={run_dir(algorithm)}',
          f'--eval_every={EVAL_EVERY.get(algorithm, 10)}',
          *PAPER, *PER_ALGORITHM[algorithm]]
  if algorithm in ('feddst', 'feddst_prox'):
    args.append(f'--readjustment_end_round={_ROUNDS.value // 2}')
  if _DATA_DIR.value:
    args.append(f'--data_dir={_DATA_DIR.value}')
  return args


def read_rows(algorithm: str) -> list[dict]:
  return report_lib.read_rows(run_dir(algorithm))


_f = report_lib.value


def summarize(algorithm: str) -> dict | None:
  rows = read_rows(algorithm)
  if not rows:
    return None
  evals = [r for r in rows if _f(r, 'test/client_mean_accuracy') is not None]
  out = dict(algorithm=algorithm, rounds=int(rows[-1]['round']))
  for mb in _BUDGETS_MB:
    within = [r for r in evals
              if _f(r, 'round/cumulative_uplink_bytes') <= mb * report_lib.BYTES_PER_MB]
    out[f'acc@{mb}MB'] = (max(_f(r, 'test/client_mean_accuracy')
                              for r in within) if within else None)
  for r_at in _AT_ROUNDS:
    # The last evaluation at or before round r_at (dense runs evaluate every 4).
    match = [r for r in evals if int(r['round']) <= r_at]
    complete = int(rows[-1]['round']) >= r_at
    out[f'acc@r{r_at}'] = (_f(match[-1], 'test/client_mean_accuracy')
                           if match and complete else None)
    out[f'global@r{r_at}'] = (_f(match[-1], 'test/accuracy')
                              if match and complete else None)
  tail = [_f(r, 'test/client_mean_accuracy') for r in evals
          if int(r['round']) >= _TAIL_FROM]
  out[f'acc_mean_r{_TAIL_FROM}+'] = (
      sum(tail) / len(tail) if tail and out['rounds'] >= _ROUNDS.value
      else None)
  last = rows[-1]
  out['uplink_MB'] = _f(last, 'round/cumulative_uplink_bytes') / report_lib.BYTES_PER_MB
  out['downlink_MB'] = _f(last, 'round/cumulative_downlink_bytes') / report_lib.BYTES_PER_MB
  out['client_TFLOPs'] = sum(_f(r, 'round/client_flops') or 0 for r in rows) / 1e12
  out['wall_h'] = _f(last, 'time/elapsed_seconds') / 3600
  return out


_fmt = report_lib.fmt


_UPLOAD_POINTS = [f'acc@{mb}MB' for mb in _BUDGETS_MB]
_ROUND_POINTS = [f'acc@r{r}' for r in _AT_ROUNDS] + [f'acc_mean_r{_TAIL_FROM}+']


def _differences(feddst: dict, other: dict, points) -> list[float | None]:
  return [None if feddst[k] is None or other[k] is None
          else feddst[k] - other[k] for k in points]


def _comparison(summaries: list[dict]) -> list[str]:
  """FedDST minus each baseline, at equal upload and at equal rounds."""
  by_name = {s['algorithm']: s for s in summaries}
  if 'feddst' not in by_name:
    return []
  points = _UPLOAD_POINTS + _ROUND_POINTS
  lines = ['| FedDST minus | ' + ' | '.join(points) + ' |',
           '|' + '---|' * (len(points) + 1)]
  for name, other in by_name.items():
    if name == 'feddst':
      continue
    cells = ['—' if d is None else f'{d:+.3f}'
             for d in _differences(by_name['feddst'], other, points)]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return lines


def _judge(diffs: list[float | None]) -> str:
  known = [d for d in diffs if d is not None]
  if len(known) < len(diffs):
    return 'not known yet'
  cells = ', '.join(f'{d:+.3f}' for d in known)
  if all(d > _LEVEL for d in known):
    return f'**better** ({cells})'
  if all(d < -_LEVEL for d in known):
    return f'**worse** ({cells})'
  if all(abs(d) <= _LEVEL for d in known):
    return f'level ({cells})'
  return f'mixed ({cells})'


def verdicts(summaries: list[dict]) -> list[str]:
  """One line per baseline: does FedDST beat it at equal upload / rounds?"""
  by_name = {s['algorithm']: s for s in summaries}
  if 'feddst' not in by_name:
    return []
  lines = []
  for name, other in by_name.items():
    if name == 'feddst':
      continue
    upload = _judge(_differences(by_name['feddst'], other, _UPLOAD_POINTS))
    rounds = _judge(_differences(by_name['feddst'], other, _ROUND_POINTS))
    lines.append(f'- FedDST vs {name}: at equal upload (100/200/400 MB) '
                 f'{upload}; at equal rounds (r50/r100/r150/mean '
                 f'r{_TAIL_FROM}+) {rounds}.')
  return lines


def report() -> None:
  """Writes --page (tables, status, commands), the plots and
  results_summary.json."""
  summaries = [s for s in map(summarize, _ALGORITHMS.value) if s]
  keys = ['algorithm', 'rounds'] + _UPLOAD_POINTS + _ROUND_POINTS + [
      f'global@r{r}' for r in _AT_ROUNDS] + [
          'uplink_MB', 'downlink_MB', 'client_TFLOPs']
  table = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
  for s in summaries:
    table.append('| ' + ' | '.join(_fmt(s[k]) for k in keys) + ' |')
  complete = [s['algorithm'] for s in summaries if s['rounds'] >= _ROUNDS.value]
  pending = [a for a in _ALGORITHMS.value if a not in complete]
  out_dir = os.path.join(_DOCS.value, 'reproduce', f'seed{_SEED.value}')
  page = os.path.join(_DOCS.value, _PAGE.value)
  plots = os.path.relpath(out_dir, os.path.dirname(page))
  os.makedirs(out_dir, exist_ok=True)
  os.makedirs(os.path.dirname(page), exist_ok=True)
  dirs = [run_dir(s['algorithm']) for s in summaries]
  subprocess.run([sys.executable, os.path.join(_REPO, 'launchers', 'plot.py'),
                  f'--run_dirs={",".join(dirs)}',
                  f'--output_dir={out_dir}'], check=True)
  commands = '\n'.join(
      report_lib.shown_command(command(a), _REPO, {_ROOT.value: SHOWN_ROOT})
      for a in _ALGORITHMS.value)
  text = f"""## Reproduction on Fashion-MNIST, partition seed {_SEED.value}

Generated by `uv run python benchmarks/reproduce.py --report` from the runs of the commands
below. Settings (all runs): 400 clients, Dirichlet β=0.1 (one fixed
partition, seed {_SEED.value}), 20 clients per round, 10 local epochs, batch 32, SGD lr 0.01 momentum 0.9,
L2 1e-3, {_ROUNDS.value} rounds. FedAvgM: server momentum 0.9; FedProx: μ=1; RandomMask: S=0.8, α=0;
FedDST: S=0.8, α=0.05, R_adj=10, R_end={_ROUNDS.value // 2}. Sparse runs are evaluated every 10 rounds,
dense ones every 4 (a dense round uploads ~21 MB, so the 100/200 MB budgets need early evaluations).

Status: complete {complete or 'none'}; **not complete: {pending or 'none'}**.

`acc@B` is the best mean client-local test accuracy (the paper's metric) among evaluations whose
cumulative uplink is at most B; `acc@rN` the same metric at the last evaluation at or before round N
(round 48 for the dense runs' r50), `acc_mean_r{_TAIL_FROM}+` its mean over the evaluations from round
{_TAIL_FROM} on (steadier than one evaluation), `global@rN` the global model's accuracy on the central
test set; uplink/downlink are the bytes actually encoded, summed over rounds;
client TFLOPs are the training FLOPs of the live weights.

{chr(10).join(table)}

FedDST minus each baseline (positive: FedDST is better):

{chr(10).join(_comparison(summaries))}

Verdicts (generated; "level" means within ±{_LEVEL} everywhere, "mixed" that the signs differ):

{chr(10).join(verdicts(summaries))}

![accuracy versus cumulative uplink]({plots}/accuracy_vs_uplink.png)
![accuracy versus rounds]({plots}/accuracy_vs_rounds.png)

Commands (each resumes from its checkpoints; `benchmarks/reproduce.py` runs them in order):

```
{commands}
```

"""
  text = report_lib.write_doc(page, text)
  with open(os.path.join(out_dir, 'results_summary.json'), 'w') as f:
    json.dump(summaries, f, indent=1)
  print(text)


def main(argv):
  del argv
  unknown = set(_ALGORITHMS.value) - set(PER_ALGORITHM)
  if unknown:
    raise app.UsageError(f'--algorithms: unknown {sorted(unknown)}; expected '
                         f'some of {sorted(PER_ALGORITHM)}.')
  if _REPORT.value:
    report()
    return
  for algorithm in _ALGORITHMS.value:
    print(' '.join(command(algorithm)), flush=True)
    subprocess.run(command(algorithm), check=True)


if __name__ == '__main__':
  app.run(main)
