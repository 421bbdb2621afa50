r"""The mask-dynamics study: does a dynamic mask beat a static one at S=0.95?

Runs, through `launchers/train.py`, RandomMask, FedDST as published, FedDST
with each of the reference's client/server options, this project's consensus
regrowth (alone and with readjustment after epoch 5) and dense FedAvg, with
the paper's client settings on Fashion-MNIST (400 clients, Dirichlet β=0.1,
20 per round, 10 local epochs, batch 32, SGD lr 0.01 momentum 0.9, L2 1e-3,
α=0.05, R_adj=10, R_end=rounds/2). One run directory per setting and
variant under --root_dir; complete runs are skipped, interrupted ones resume
from their checkpoints, so this can be stopped and restarted at any time:

  nohup uv run python benchmarks/dynamics.py > dynamics.log 2>&1 &

Settings run in order (S=0.95 seed 0, S=0.95 seed 1, S=0.9 seed 0);
`--settings` picks some. `--report` writes docs/dynamics.md and, in
docs/dynamics/<setting>/, its plots from whatever has finished. Every
variant is evaluated every 5 rounds. Data: `apt-get install
dataset-fashion-mnist` (or --data_dir).
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
from benchmarks import report_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

SHOWN_ROOT = 'runs/dynamics'  # The docs' commands show the runs here.
_ROOT = flags.DEFINE_string('root_dir', SHOWN_ROOT,
                            'One run directory per setting/variant below this.')
_ROUNDS = flags.DEFINE_integer('rounds', 150, 'Rounds per run.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Fashion-MNIST files.')
_SETTINGS = flags.DEFINE_list('settings', ['s95_seed0', 's95_seed1',
                                           's90_seed0'],
                              'Which settings, in this order.')
_VARIANTS = flags.DEFINE_list(
    'variants', ['consensus_epoch5', 'random_mask', 'feddst', 'consensus',
                 'feddst_epoch5', 'feddst_remember', 'fedavg'],
    'Which variants of each setting, in this order.')
_REPORT = flags.DEFINE_bool('report', False,
                            'Write docs/dynamics.md and plots from the runs.')
_DOCS = flags.DEFINE_string('docs_dir', os.path.join(_REPO, 'docs'),
                            'Where --report writes.')

SETTINGS = {'s95_seed0': (0.95, 0), 's95_seed1': (0.95, 1),
            's90_seed0': (0.9, 0)}
PAPER = [*report_lib.PAPER_FLAGS, '--eval_every=5']
_DST = ['--readjustment_ratio=0.05', '--rounds_between_readjustments=10']
VARIANTS = {
    'random_mask': ['--algorithm=random_mask'],
    'feddst': ['--algorithm=feddst', *_DST],
    'feddst_epoch5': ['--algorithm=feddst', *_DST, '--readjust_after_epoch=5'],
    'feddst_remember': ['--algorithm=feddst', *_DST, '--remember_old'],
    'consensus': ['--algorithm=feddst_consensus', *_DST],
    'consensus_epoch5': ['--algorithm=feddst_consensus', *_DST,
                         '--readjust_after_epoch=5'],
    'fedavg': ['--algorithm=fedavg'],
}
BUDGETS_MB = (50, 100, 200)
TAIL_FROM = 101
WIN_MARGIN = 0.02  # A dynamic variant must beat RandomMask by this.


def run_dir(setting: str, variant: str) -> str:
  """Dense FedAvg ignores S: one run per seed serves every setting."""
  if variant == 'fedavg':
    setting = f's95_seed{SETTINGS[setting][1]}'
  return os.path.join(_ROOT.value, setting, variant)


def command(setting: str, variant: str) -> list[str]:
  sparsity, seed = SETTINGS[setting]
  args = [sys.executable, os.path.join(_REPO, 'launchers', 'train.py'),
          *PAPER, *VARIANTS[variant], f'--rounds={_ROUNDS.value}',
          f'--seed={seed}', f'--root_dir={run_dir(setting, variant)}']
  if variant != 'fedavg':
    args.append(f'--sparsity={sparsity}')
  if variant not in ('fedavg', 'random_mask'):
    args.append(f'--readjustment_end_round={_ROUNDS.value // 2}')
  if _DATA_DIR.value:
    args.append(f'--data_dir={_DATA_DIR.value}')
  return args


def summarize(setting: str, variant: str) -> dict | None:
  """The table row of one run, or None if it has not started."""
  rows = report_lib.read_rows(run_dir(setting, variant))
  if not rows:
    return None
  out = dict(variant=variant, rounds=int(rows[-1]['round']))
  for mb in BUDGETS_MB:
    out[f'acc@{mb}MB'] = report_lib.best_within_mb(rows, mb)
  out[f'acc_mean_r{TAIL_FROM}+'] = report_lib.tail_mean(rows, TAIL_FROM,
                                                       _ROUNDS.value)
  turnover = report_lib.value(rows[-1], 'finalizer/mask_turnover')
  out['turnover'] = turnover
  jaccards = [report_lib.value(r, 'finalizer/client_mask_jaccard') for r in rows
              if report_lib.value(r, 'round/readjusted') == 1]
  jaccards = [j for j in jaccards if j is not None]
  out['jaccard_readjusting'] = (sum(jaccards) / len(jaccards) if jaccards
                                else None)
  out['uplink_MB'] = report_lib.uplink_mb(rows)
  return out


def _paired(setting: str, variant: str, reference: str):
  """`report_lib.paired_tail_difference` of two runs of one setting."""
  return report_lib.paired_runs(run_dir(setting, variant),
                                run_dir(setting, reference), TAIL_FROM,
                                _ROUNDS.value)


def _verdicts() -> list[str]:
  """Per sparsity, each variant against RandomMask and FedAvg on every seed,
  and the study's criterion: ≥ +WIN_MARGIN over RandomMask on all seeds."""
  lines = []
  by_sparsity: dict[float, list[str]] = {}
  for setting in _SETTINGS.value:
    by_sparsity.setdefault(SETTINGS[setting][0], []).append(setting)
  for sparsity, settings in by_sparsity.items():
    seeds = [SETTINGS[s][1] for s in settings]
    head = (['variant'] + [f'− random_mask, seed {k}' for k in seeds] +
            [f'− fedavg, seed {k}' for k in seeds] +
            [f'≥ +{WIN_MARGIN} over RandomMask on every seed'])
    table = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for variant in _VARIANTS.value:
      if variant in ('random_mask', 'fedavg'):
        continue
      versus_mask = [_paired(s, variant, 'random_mask') for s in settings]
      versus_dense = [_paired(s, variant, 'fedavg') for s in settings]
      if any(d is not None and d[0] < WIN_MARGIN for d in versus_mask):
        verdict = 'no'
      elif len(settings) > 1 and all(d is not None for d in versus_mask):
        verdict = '**yes**'
      else:
        verdict = 'undecided'
      table.append('| ' + ' | '.join(
          [variant] + [report_lib.fmt_difference(d)
                       for d in versus_mask + versus_dense] + [verdict]) + ' |')
    lines += [f'## S={sparsity}: every seed', '',
              f'Mean client accuracy over rounds {TAIL_FROM}–{_ROUNDS.value} '
              'minus the reference of the same seed, paired by evaluation '
              'round (mean ± standard error); "no" as soon as one seed is '
              f'below +{WIN_MARGIN}, "yes" only with every seed complete.', '',
              *table, '']
  return lines


def report() -> None:
  """Writes docs/dynamics.md (tables per setting) and plots."""
  keys = (['variant', 'rounds'] + [f'acc@{mb}MB' for mb in BUDGETS_MB] +
          [f'acc_mean_r{TAIL_FROM}+', 'turnover', 'jaccard_readjusting',
           'uplink_MB'])
  sections = []
  for setting in _SETTINGS.value:
    rows = [s for s in (summarize(setting, v) for v in _VARIANTS.value) if s]
    if not rows:
      continue
    table = report_lib.markdown_table(keys, rows)
    diffs = [f'| {r["variant"]} | ' + ' | '.join(
        report_lib.fmt_difference(_paired(setting, r['variant'], ref))
        for ref in ('random_mask', 'fedavg')) + ' |' for r in rows]
    out_dir = os.path.join(_DOCS.value, 'dynamics', setting)
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(_REPO, 'launchers', 'plot.py'),
                    '--run_dirs=' + ','.join(run_dir(setting, r['variant'])
                                             for r in rows),
                    f'--output_dir={out_dir}'], check=True)
    sections.append('\n'.join([
        f'## {setting}', '', *table, '',
        f'Mean client accuracy over rounds {TAIL_FROM}–{_ROUNDS.value}, minus '
        'RandomMask and minus FedAvg, paired by evaluation round (mean ± '
        'standard error of the per-round differences):', '',
        '| variant | − random_mask | − fedavg |', '|---|---|---|', *diffs, '',
        f'![accuracy vs uplink](dynamics/{setting}/accuracy_vs_uplink.png)',
        f'![accuracy vs rounds](dynamics/{setting}/accuracy_vs_rounds.png)',
        '']))
  commands = '\n'.join(
      report_lib.shown_command(command(s, v), _REPO,
                               {_ROOT.value: SHOWN_ROOT})
      for s in _SETTINGS.value for v in _VARIANTS.value)
  status = []
  for setting in _SETTINGS.value:
    done = [v for v in _VARIANTS.value
            if (summarize(setting, v) or {}).get('rounds', 0) >= _ROUNDS.value]
    status.append(f'- {setting}: complete {done or "none"}; not complete '
                  f'{[v for v in _VARIANTS.value if v not in done] or "none"}')
  text = '\n'.join([
      '# Mask dynamics at high sparsity', '',
      'Generated by `uv run python benchmarks/dynamics.py --report` from the '
      'runs of the commands below. Fashion-MNIST, 400 clients, Dirichlet '
      'β=0.1, 20 clients per round, 10 local epochs, batch 32, SGD lr 0.01 '
      'momentum 0.9, L2 1e-3, α=0.05, R_adj=10, R_end=75, '
      f'{_ROUNDS.value} rounds, evaluations every 5 rounds.', '',
      '`acc@B`: best mean client-local test accuracy among evaluations within '
      'B MB of cumulative uplink; `acc_mean_r101+`: its mean over the '
      'evaluations of rounds 101–150; `turnover`: share of the final global '
      'mask not in the round-0 mask; `jaccard_readjusting`: mean over '
      'readjusting rounds of `finalizer/client_mask_jaccard`.', '',
      'Status:', *status, '', *sections, *_verdicts(), '## Commands', '',
      '```', commands, '```'])
  print(report_lib.write_doc(os.path.join(_DOCS.value, 'dynamics.md'), text))


def main(argv):
  del argv
  report_lib.run_study(
      settings=SETTINGS, chosen_settings=_SETTINGS.value, variants=VARIANTS,
      chosen_variants=_VARIANTS.value, command=command, rounds=_ROUNDS.value,
      report=report if _REPORT.value else None)


if __name__ == '__main__':
  app.run(main)
