"""The field on one framework: the runs and tables of docs/methods.md.

  uv run python benchmarks/methods.py [--settings=seed0] [--variants=...]
  uv run python benchmarks/methods.py --report   # writes docs/methods.md

Fashion-MNIST, 400 clients, Dirichlet β=0.1, the paper's client settings,
150 rounds: every sparse method at S=0.9 (PruneFL: density capped at 0.1)
on the same data, clients, byte accounting and metrics; dense FedAvg as the reference; FedDST and FLASH with
per-client density budgets 0.05/0.1/0.2 (at S=0.8: a budget cannot exceed
the global density 1 − S, so 0.2 needs S ≤ 0.8).

Resumable and frozen-clone friendly, like benchmarks/dynamics.py: each run is
a `launchers/train.py` run directory that resumes from its checkpoints; a
complete run returns at once. --report copies each finished run's records into
docs/methods/<seed>/runs/<variant>/ (commit them): a run found there is not
run again, so the study survives a new machine one finished run at a time,
and the page regenerates from them alone. Plots go to docs/methods/<seed>/.
Every variant's flags are checked against the algorithm registry before the
first run starts.
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

SETTINGS = {'seed0': 0, 'seed1': 1, 'seed2': 2}  # Partition/init seed.
SPARSITY = 0.9
BUDGETS = '0.05:0.3,0.1:0.3,0.2:0.4'
BUDGET_SPARSITY = 0.8
_DST = ['--readjustment_ratio=0.05', '--rounds_between_readjustments=10']
PRUNEFL_TIMES = os.path.join(_REPO, 'benchmarks', 'prunefl_times',
                             'mnist_cnn_b32.json')
VARIANTS = {
    'fedavg': ['--algorithm=fedavg'],
    'random_mask': ['--algorithm=random_mask', f'--sparsity={SPARSITY}'],
    'feddst': ['--algorithm=feddst', f'--sparsity={SPARSITY}', *_DST],
    'flash_spdst': ['--algorithm=flash_spdst', f'--sparsity={SPARSITY}'],
    'flash_jmwst': ['--algorithm=flash_jmwst', f'--sparsity={SPARSITY}'],
    # A static mask with denser convolutions (ER: conv1 1.0, conv2 0.65,
    # fc1 0.09, fc2 0.52), near SparsyFed's and FLASH's layer profiles:
    # does the profile alone make their difference from RandomMask?
    'random_mask_er': ['--algorithm=random_mask', f'--sparsity={SPARSITY}',
                       '--sparsity_distribution=er'],
    'sparsyfed': ['--algorithm=sparsyfed', f'--sparsity={SPARSITY}'],
    # PruneFL sizes its model itself; --sparsity caps its density at 1 - S.
    # Its round-time model uses per-layer compute times measured on this
    # project's machine (benchmarks/prunefl_time_coefficients.py), as the
    # authors' measured coefficients.
    'prunefl': ['--algorithm=prunefl', f'--sparsity={SPARSITY}',
                '--rounds_between_readjustments=10',
                f'--prunefl_time_coefficients={PRUNEFL_TIMES}'],
    'feddst_budgets': ['--algorithm=feddst', f'--sparsity={BUDGET_SPARSITY}',
                       *_DST, f'--client_density_budgets={BUDGETS}'],
    'flash_jmwst_budgets': ['--algorithm=flash_jmwst',
                            f'--sparsity={BUDGET_SPARSITY}',
                            f'--client_density_budgets={BUDGETS}'],
}
BUDGETS_MB = (50, 100, 200)
TAIL_FROM = 101

SHOWN_ROOT = 'runs/methods'  # The docs' commands show the runs here,
SHOWN_DYNAMICS_ROOT = 'runs/dynamics'  # and benchmarks/dynamics.py's here.
_ROOT = flags.DEFINE_string('root_dir', SHOWN_ROOT,
                            'One run directory per setting/variant below this.')
_DYNAMICS_ROOT = flags.DEFINE_string(
    'dynamics_root_dir', SHOWN_DYNAMICS_ROOT,
    "benchmarks/dynamics.py's --root_dir: FedAvg and the S=0.9 seed-0 "
    'RandomMask and FedDST runs are the same runs; empty: run them here.')
_ROUNDS = flags.DEFINE_integer('rounds', 150, 'Rounds per run.', lower_bound=1)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Fashion-MNIST files.')
_SETTINGS = flags.DEFINE_list('settings', list(SETTINGS),
                              'Which settings, in this order.')
_VARIANTS = flags.DEFINE_list('variants', list(VARIANTS),
                              'Which variants of each setting, in this order.')
_REPORT = flags.DEFINE_bool('report', False,
                            'Write docs/methods.md and plots from the runs.')
_DOCS = flags.DEFINE_string('docs_dir', os.path.join(_REPO, 'docs'),
                            'Where --report writes.')
_README = flags.DEFINE_string(
    'readme', None,
    "--report writes the short headline table between the README's markers "
    '(and so in <docs_dir>/results.md); default: the README.md beside '
    '<docs_dir> (the repository\'s with the default --docs_dir); empty: no '
    'README.')


def readme_path() -> str:
  """The README --report rewrites ('' for none): --readme, or the one
  beside --docs_dir, so that a report into another docs directory never
  touches the repository's README."""
  if _README.value is not None:
    return _README.value
  return os.path.join(os.path.dirname(os.path.abspath(_DOCS.value)),
                      'README.md')


def run_dir(setting: str, variant: str) -> str:
  """Runs benchmarks/dynamics.py also makes are shared with it (the launcher
  refuses a run directory whose hparams differ, so sharing is safe)."""
  seed = SETTINGS[setting]
  if _DYNAMICS_ROOT.value and (variant == 'fedavg' or (
      seed == 0 and variant in ('random_mask', 'feddst'))):
    return os.path.join(_DYNAMICS_ROOT.value, f's95_seed{seed}'
                        if variant == 'fedavg' else 's90_seed0', variant)
  return os.path.join(_ROOT.value, setting, variant)


def archive_dir(setting: str, variant: str) -> str:
  """Where --report keeps a finished run's records, in the repo: the runs take
  ~8 h a seed, longer than a machine may live."""
  return os.path.join(_DOCS.value, 'methods', setting, 'runs', variant)


def record_dir(setting: str, variant: str) -> str:
  """The run directory, or its archive where that holds more rounds."""
  live, archived = run_dir(setting, variant), archive_dir(setting, variant)
  return (archived if report_lib.rounds_recorded(archived) >
          report_lib.rounds_recorded(live) else live)


def finished(setting: str, variant: str) -> bool:
  return report_lib.rounds_recorded(
      record_dir(setting, variant)) >= _ROUNDS.value


def command(setting: str, variant: str) -> list[str]:
  args = [sys.executable, os.path.join(_REPO, 'launchers', 'train.py'),
          *report_lib.PAPER_FLAGS, '--eval_every=5', *VARIANTS[variant],
          f'--rounds={_ROUNDS.value}', f'--seed={SETTINGS[setting]}',
          f'--root_dir={run_dir(setting, variant)}']
  if '--readjustment_ratio=0.05' in VARIANTS[variant]:
    args.append(f'--readjustment_end_round={_ROUNDS.value // 2}')
  if _DATA_DIR.value:
    args.append(f'--data_dir={_DATA_DIR.value}')
  return args


def _summed(rows: list[dict], key: str) -> float:
  """`key` summed over a run's rows (empty cells count 0)."""
  return sum(report_lib.value(r, key) or 0.0 for r in rows)


def _complete_rows(setting: str, variant: str) -> list[dict]:
  """The rows of a run that has all its rounds; [] otherwise."""
  rows = report_lib.read_rows(record_dir(setting, variant))
  return rows if rows and int(rows[-1]['round']) >= _ROUNDS.value else []


def _budget_labels(rows: list[dict]) -> list[str]:
  prefix, suffix = 'test/budget/', '/client_mean_accuracy'
  return sorted((k[len(prefix):-len(suffix)] for k in rows[0]
                 if k.startswith(prefix) and k.endswith(suffix)), key=float)


def summarize(setting: str, variant: str) -> list[dict]:
  """The table rows of one run (one more per budget group); [] before it
  starts."""
  rows = report_lib.read_rows(record_dir(setting, variant))
  if not rows:
    return []
  flops = _summed(rows, 'round/client_flops')
  out = [dict(variant=variant, rounds=int(rows[-1]['round']),
              **{f'acc@{mb}MB': report_lib.best_within_mb(rows, mb)
                 for mb in BUDGETS_MB},
              **{f'acc_mean_r{TAIL_FROM}+': report_lib.tail_mean(
                  rows, TAIL_FROM, _ROUNDS.value)},
              uplink_MB=report_lib.uplink_mb(rows),
              client_TFLOP=flops / 1e12)]
  for label in _budget_labels(rows):
    per_client = [report_lib.value(r, f'round/budget/{label}/'
                                   'uplink_bytes_per_client') for r in rows]
    per_client = [b for b in per_client if b is not None]
    out.append({
        'variant': f'{variant} [budget {label}]',
        f'acc_mean_r{TAIL_FROM}+': report_lib.tail_mean(
            rows, TAIL_FROM, _ROUNDS.value,
            key=f'test/budget/{label}/client_mean_accuracy'),
        'uplink_MB_per_client_round': (
            sum(per_client) / len(per_client) / report_lib.BYTES_PER_MB
            if per_client else None)})
  return out


def _paired(setting: str, variant: str, reference: str):
  """`report_lib.paired_tail_difference` of two runs of one setting (same
  seed: the same clients trained in every round, the same test data)."""
  return report_lib.paired_runs(record_dir(setting, variant),
                                record_dir(setting, reference), TAIL_FROM,
                                _ROUNDS.value)


def _paired_table(setting: str, variants: list[str]) -> list[str]:
  """Each of `variants`' tail accuracy minus RandomMask's and FedAvg's, paired
  by evaluation round: a difference one run's swings would hide shows here."""
  references = ('random_mask', 'fedavg')
  rows = [f'| {v} | ' + ' | '.join(report_lib.fmt_difference(
      _paired(setting, v, ref)) for ref in references) + ' |'
          for v in variants]
  return [f'Mean client accuracy over rounds {TAIL_FROM}–{_ROUNDS.value} '
          'minus RandomMask and minus FedAvg of the same seed, paired by '
          'evaluation round (mean ± standard error of the per-round '
          f'differences; — until both runs are complete; the budget runs are '
          f'at S={BUDGET_SPARSITY}, RandomMask at S={SPARSITY}):', '',
          '| variant | − random_mask | − fedavg |', '|---|---|---|', *rows]


NAMES = {'fedavg': 'FedAvg (dense)', 'random_mask': 'RandomMask',
         'feddst': 'FedDST', 'random_mask_er': 'RandomMask, ER profile',
         'flash_spdst': 'FLASH-SPDST',
         'flash_jmwst': 'FLASH-JMWST', 'sparsyfed': 'SparsyFed',
         'prunefl': 'PruneFL', 'feddst_budgets': 'FedDST, budgets (S=0.8)',
         'flash_jmwst_budgets': 'FLASH-JMWST, budgets (S=0.8)'}
REFERENCES = ('random_mask', 'fedavg')
# The generated headline's place in README.md and docs/results.md.
HEADLINE_BEGIN = ('<!-- The table below is written by '
                  '`benchmarks/methods.py --report`. -->')
HEADLINE_END = '<!-- End of the generated table. -->'
_SEEDS_FIGURE = ('![accuracy vs uplink, one panel per seed]'
                 '({prefix}methods/accuracy_vs_uplink_seeds.png)')


def seed_numbers(variant: str) -> dict[str, dict]:
  """Per chosen setting whose run of `variant` is complete: its tail mean,
  acc@MB, uplink and client TFLOP."""
  out = {}
  for setting in _SETTINGS.value:
    rows = report_lib.read_rows(record_dir(setting, variant))
    tail = report_lib.tail_mean(rows, TAIL_FROM, _ROUNDS.value)
    if tail is None:
      continue
    out[setting] = {
        'tail': tail, 'uplink_MB': report_lib.uplink_mb(rows),
        'client_TFLOP': _summed(rows, 'round/client_flops') / 1e12,
        **{f'acc@{mb}MB': report_lib.best_within_mb(rows, mb)
           for mb in BUDGETS_MB}}
  return out


def headline_rows() -> list[dict]:
  """Per variant with a complete run: mean ± s.e. over seeds of each
  number, and the per-seed tail differences against each reference, paired
  by seed (a seed is one partition: its clients, rounds and test data are
  the same for every method); best tail accuracy first."""
  numbers = {v: seed_numbers(v) for v in _VARIANTS.value}
  rows = []
  for v, seeds in numbers.items():
    if not seeds:
      continue
    row = {'variant': v, 'seeds': len(seeds)}
    for key in ('tail', 'uplink_MB', 'client_TFLOP',
                *(f'acc@{mb}MB' for mb in BUDGETS_MB)):
      values = [n[key] for n in seeds.values()]
      row[key] = (None if None in values else report_lib.mean_se(values))
    for ref in REFERENCES:
      theirs = numbers.get(ref, {})
      per_seed = [] if v == ref else [
          n['tail'] - theirs[s]['tail'] for s, n in seeds.items()
          if s in theirs]
      row[f'vs_{ref}_per_seed'] = per_seed
      row[f'vs_{ref}'] = report_lib.mean_se(per_seed)
    rows.append(row)
  return sorted(rows, key=lambda r: -r['tail'][0])


# A paired difference whose standard error is above this (in accuracy) is
# called spread, not level: "within 2 s.e." of ±0.2 says nothing.
SPREAD_SE = 0.02


def _verdict(row: dict) -> str:
  """What the paired differences of `row` say, in words: only those over at
  least two seeds make a claim, and one whose seeds disagree widely says
  so with its per-seed values."""
  claims, single = [], []
  for ref in REFERENCES:
    stat = row[f'vs_{ref}']
    if stat is None:
      continue
    if stat[2] < 2:
      single.append(NAMES[ref])
    elif report_lib.beyond_two_se(stat):
      claims.append(f'{"above" if stat[0] > 0 else "below"} {NAMES[ref]}')
    elif stat[1] > SPREAD_SE:
      values = ', '.join(f'{d:+.3f}' for d in row[f'vs_{ref}_per_seed'])
      claims.append(f'the seeds disagree against {NAMES[ref]} ({values})')
    else:
      claims.append(f'within 2 s.e. of {NAMES[ref]}')
  if single:
    claims.append(f'against {" and ".join(single)}: one seed, no claim yet')
  text = '; '.join(claims)
  return text[:1].upper() + text[1:] + '.' if text else ''


def _difference_cell(stat, seeds: int) -> str:
  """A paired difference, saying over how many seeds when the reference
  has fewer complete runs than the method."""
  text = report_lib.fmt_mean_se(stat, signed=True)
  if stat is not None and 1 < stat[2] < seeds:
    text += f' ({stat[2]} of {seeds} seeds)'
  return text


def headline_tables(rows: list[dict]) -> tuple[list[str], list[str]]:
  """(the full table for docs/methods.md, the short one for README.md and
  docs/results.md)."""
  mean = lambda stat: None if stat is None else stat[0]  # pylint: disable=unnecessary-lambda-assignment
  full = ['| method | seeds | rounds 101–150 | within 50 MB | within 100 MB |'
          ' within 200 MB | − RandomMask | − FedAvg | client TFLOP | '
          'uplink MB |', '|---|---|---|---|---|---|---|---|---|---|']
  short = ['| method | seeds | rounds 101–150 | − RandomMask | − FedAvg | '
           'uplink MB | what it shows |', '|---|---|---|---|---|---|---|']
  for r in rows:
    diffs = [_difference_cell(r[f'vs_{ref}'], r['seeds'])
             for ref in REFERENCES]
    full.append(' | '.join([
        f'| {NAMES[r["variant"]]}', str(r['seeds']),
        report_lib.fmt_mean_se(r['tail']),
        *(report_lib.fmt_mean_se(r[f'acc@{mb}MB']) for mb in BUDGETS_MB),
        *diffs, f'{mean(r["client_TFLOP"]):.1f}',
        f'{mean(r["uplink_MB"]):,.0f} |']))
    short.append(' | '.join([
        f'| {NAMES[r["variant"]]}', str(r['seeds']),
        report_lib.fmt_mean_se(r['tail']), *diffs,
        f'{mean(r["uplink_MB"]):,.0f}', f'{_verdict(r)} |']))
  return full, short


def _at_round(rows: list[dict], key: str, round_num: int):
  """`key` in the last row up to `round_num` that has it (None if none)."""
  values = [report_lib.value(r, key) for r in rows
            if int(r['round']) <= round_num]
  values = [v for v in values if v is not None]
  return values[-1] if values else None


def _per_seed(values, fmt: str = '{:.3f}') -> str:
  """Per-seed values as one cell: one value when the seeds agree to the
  shown digits, else each seed's, in seed order ('a / b / c'); — when
  there are none."""
  shown = ['—' if v is None else fmt.format(v) for v in values]
  if not shown:
    return '—'
  return shown[0] if len(set(shown)) == 1 else ' / '.join(shown)


def mask_rows() -> list[dict]:
  """Per variant, per complete seed: the final global mask's per-layer and
  total density, its turnover against the initial mask, the clients' mask
  agreement at round 50 and at the end, and the clients' training FLOPs as
  a share of the same training on the dense model (the numbers the notes
  below the tables quote)."""
  out = []
  for v in _VARIANTS.value:
    seeds = []
    for setting in _SETTINGS.value:
      rows = _complete_rows(setting, v)
      if not rows:
        continue
      dense = _summed(rows, 'round/client_dense_flops')
      seeds.append({
          'layers': {k[len('density/'):-len('/kernel')]: report_lib.value(
              rows[-1], k) for k in rows[-1]
                     if k.startswith('density/') and k.endswith('/kernel')},
          'total_1': report_lib.value(rows[0], 'density/total'),
          'total': report_lib.value(rows[-1], 'density/total'),
          'turnover': report_lib.value(rows[-1], 'finalizer/mask_turnover'),
          'jaccard_50': _at_round(rows, 'finalizer/client_mask_jaccard', 50),
          'jaccard_end': report_lib.value(
              rows[-1], 'finalizer/client_mask_jaccard'),
          'flops_share': (_summed(rows, 'round/client_flops') / dense
                          if dense else None)})
    if seeds:
      out.append({'variant': v, 'seeds': seeds})
  return out


def mask_table(rows: list[dict]) -> list[str]:
  """`mask_rows` as a Markdown table, one row per method; a cell gives
  each seed's value where the seeds differ."""
  lines = ['| method | seeds | final density per layer | total, round 1 → end | '
           'turnover | client-mask Jaccard, round 50 | at the end | '
           'client FLOPs / dense |', '|---|---|---|---|---|---|---|---|']
  for r in rows:
    seeds = r['seeds']
    layers = ', '.join(
        f'{layer} ' + _per_seed([s['layers'].get(layer) for s in seeds],
                              '{:.2f}')
        for layer in seeds[0]['layers'])
    jaccard = (_per_seed([s['jaccard_50'] for s in seeds], '{:.2f}') + ' | ' +
               _per_seed([s['jaccard_end'] for s in seeds], '{:.2f}'))
    lines.append(' | '.join([
        f'| {NAMES[r["variant"]]}', str(len(seeds)), layers or '—',
        _per_seed([s['total_1'] for s in seeds]) + ' → ' +
        _per_seed([s['total'] for s in seeds]),
        _per_seed([None if s['turnover'] is None else 100 * s['turnover']
                 for s in seeds], '{:.1f}%'), jaccard,
        _per_seed([s['flops_share'] for s in seeds], '{:.2f}') + ' |']))
  return lines


def _over_budget(rows: list[dict], label: str):
  """Client-rounds of budget group `label` over its budget; None when the
  run did not record it (not 0: unknown is not none)."""
  values = [report_lib.value(r, f'round/budget/{label}/over_budget_clients')
            for r in rows]
  return None if None in values else sum(values)


def budget_table() -> list[str]:
  """Per budgeted variant and density group: the group's mean client
  accuracy over the tail rounds on each seed, their mean ± s.e., and the
  client-rounds over budget (should be 0). Groups hold different clients,
  so these are not paired comparisons."""
  lines = []
  for v in _VARIANTS.value:
    per_seed = {}
    for setting in _SETTINGS.value:
      rows = _complete_rows(setting, v)
      if not rows or not _budget_labels(rows):
        continue
      per_seed[setting] = {label: (
          report_lib.tail_mean(
              rows, TAIL_FROM, _ROUNDS.value,
              key=f'test/budget/{label}/client_mean_accuracy'),
          _over_budget(rows, label)) for label in _budget_labels(rows)}
    for label in sorted({l for g in per_seed.values() for l in g},
                        key=float):
      tails = [g[label][0] if label in g else None
               for g in (per_seed.get(s, {}) for s in _SETTINGS.value)]
      over = [g[label][1] for g in per_seed.values() if label in g]
      lines.append(' | '.join([
          f'| {NAMES[v]}', label, *(report_lib.fmt(t) for t in tails),
          report_lib.fmt_mean_se(report_lib.mean_se(tails)),
          ('—' if None in over else f'{sum(over):.0f}') + ' |']))
  if not lines:
    return []
  return ['| method | budget | ' + ' | '.join(_SETTINGS.value) +
          ' | mean ± s.e. | client-rounds over budget |',
          '|---|---|' + '---|' * len(_SETTINGS.value) + '---|---|', *lines]


def plot_seeds(out_path: str) -> None:
  """Accuracy against cumulative uplink, one panel per chosen setting."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  settings = _SETTINGS.value
  fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4),
                           sharey=True, squeeze=False)
  colors = plt.get_cmap('tab10')
  lines = {}
  for ax, setting in zip(axes[0], settings):
    for v in _VARIANTS.value:  # One colour per method in every panel.
      rows = report_lib.evaluations(
          report_lib.read_rows(record_dir(setting, v)))
      if rows:
        lines[v], = ax.plot(
            [report_lib.value(r, 'round/cumulative_uplink_bytes') /
             report_lib.BYTES_PER_MB for r in rows],
            [report_lib.value(r, report_lib.ACCURACY) for r in rows],
            color=colors(list(VARIANTS).index(v)), linewidth=1)
    ax.set_xscale('log')
    ax.set_title(f'partition {setting}')
    ax.set_xlabel('cumulative uplink (MB)')
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('mean client test accuracy')
  fig.legend(list(lines.values()), [NAMES[v] for v in lines], fontsize=8,
             loc='lower center', ncol=min(len(lines), 5))
  fig.tight_layout(rect=(0, 0.1, 1, 1))
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  fig.savefig(out_path, dpi=110)
  plt.close(fig)


def headline(rows: list[dict]) -> list[str]:
  """The headline section of docs/methods.md."""
  full, _ = headline_tables(rows)
  return [
      '## All seeds', '',
      f'Per method, mean ± standard error over the partition seeds whose run '
      f'is complete of: the mean client accuracy over rounds {TAIL_FROM}–'
      f'{_ROUNDS.value}; the best accuracy within 50/100/200 MB of uplink; '
      'the difference of the first against RandomMask and against FedAvg '
      'of the same seed (paired by seed; **bold**: further from 0 than twice '
      'its standard error, over at least two seeds); client TFLOP and '
      'uplink are means.', '', *full, '',
      _SEEDS_FIGURE.format(prefix=''), '',
      '## What the masks did', '',
      'Over the complete seeds (a cell gives each seed\'s value, in seed '
      'order, where they differ): the final global mask\'s density per '
      'layer, and in total after round 1 and at the end; its '
      'turnover, the share of its live weights that were not in the initial '
      'mask (`finalizer/mask_turnover`); how much the clients\' uploaded '
      'masks agree (`finalizer/client_mask_jaccard`, 1 when no client '
      'changes its mask); the clients\' training FLOPs over the run as a '
      'share of the same training on the dense model (`round/client_flops` '
      '/ `round/client_dense_flops`).', '', *mask_table(mask_rows()), '',
      *budget_section()]


def budget_section() -> list[str]:
  table = budget_table()
  if not table:
    return []
  return ['## Budget groups', '',
          f'Each density group\'s mean client accuracy over rounds '
          f'{TAIL_FROM}–{_ROUNDS.value} (its clients on their own '
          'sub-model), per seed, and how many client-rounds trained above '
          'their budget (`round/budget/<density>/over_budget_clients`). The '
          'groups hold different clients, and so different data: these are '
          'not paired comparisons.', '', *table, '']


def report() -> None:
  """Writes docs/methods.md (one table per setting) and plots."""
  keys = (['variant', 'rounds'] + [f'acc@{mb}MB' for mb in BUDGETS_MB] +
          [f'acc_mean_r{TAIL_FROM}+', 'uplink_MB', 'client_TFLOP',
           'uplink_MB_per_client_round'])
  sections, status = [], []
  for setting in _SETTINGS.value:
    for v in _VARIANTS.value:  # Keep each newly finished run's records.
      live_rounds = report_lib.rounds_recorded(run_dir(setting, v))
      if live_rounds >= _ROUNDS.value and live_rounds > (
          report_lib.rounds_recorded(archive_dir(setting, v))):
        report_lib.archive_run(run_dir(setting, v), archive_dir(setting, v))
    rows = [row for v in _VARIANTS.value for row in summarize(setting, v)]
    done = [r['variant'] for r in rows
            if r.get('rounds', 0) >= _ROUNDS.value]
    status.append(f'- {setting}: complete {done or "none"}; not complete '
                  f'{[v for v in _VARIANTS.value if v not in done] or "none"}')
    if not rows:
      continue
    out_dir = os.path.join(_DOCS.value, 'methods', setting)
    os.makedirs(out_dir, exist_ok=True)
    started = [r['variant'] for r in rows if 'rounds' in r]  # Not groups.
    subprocess.run([sys.executable, os.path.join(_REPO, 'launchers', 'plot.py'),
                    '--run_dirs=' + ','.join(record_dir(setting, v)
                                             for v in started),
                    f'--output_dir={out_dir}'], check=True)
    sections += [f'## {setting}', '', *report_lib.markdown_table(keys, rows),
                 '', *_paired_table(setting, started), '',
                 f'![accuracy vs uplink](methods/{setting}/'
                 'accuracy_vs_uplink.png)',
                 f'![accuracy vs rounds](methods/{setting}/'
                 'accuracy_vs_rounds.png)', '']
  rows = headline_rows()
  if rows:
    plot_seeds(os.path.join(_DOCS.value, 'methods',
                            'accuracy_vs_uplink_seeds.png'))
    sections = headline(rows) + sections
    _, short = headline_tables(rows)
    for page, prefix in ((readme_path(), 'docs/'),
                         (os.path.join(_DOCS.value, 'results.md'), '')):
      if page and os.path.exists(page):
        report_lib.replace_between(page, HEADLINE_BEGIN, HEADLINE_END,
                                   '\n'.join([*short, '', _SEEDS_FIGURE.format(
                                       prefix=prefix)]))
  roots = {_ROOT.value: SHOWN_ROOT, _DYNAMICS_ROOT.value: SHOWN_DYNAMICS_ROOT}
  commands = '\n'.join(
      report_lib.shown_command(command(s, v), _REPO, roots)
      for s in _SETTINGS.value for v in _VARIANTS.value)
  text = '\n'.join([
      '# Sparse federated methods on one framework', '',
      'Generated by `uv run python benchmarks/methods.py --report` from the '
      'runs of the commands below and, once finished, their records '
      '(hparams.json, results/metrics.csv) kept under `docs/methods/<seed>/'
      'runs/<variant>/`, from which it also regenerates. Fashion-MNIST, 400 '
      'clients, Dirichlet '
      'β=0.1, 20 clients per round, 10 local epochs, batch 32, SGD lr 0.01 '
      f'momentum 0.9, L2 1e-3, {_ROUNDS.value} rounds, evaluations every 5 '
      f'rounds; S={SPARSITY} (budget runs: S={BUDGET_SPARSITY}, budgets '
      f'{BUDGETS} as density:fraction of clients).', '',
      '`acc@B`: best mean client-local test accuracy among evaluations within '
      f'B MB of cumulative uplink; `acc_mean_r{TAIL_FROM}+`: its mean over '
      f'the evaluations of rounds {TAIL_FROM}–{_ROUNDS.value}; `client_TFLOP`:'
      ' the clients\' training FLOPs summed over the run (`round/client_flops`'
      ', sparse kernels counted at their density); budget rows: the group\'s '
      'clients on their own sub-model, and their mean uplink per client and '
      'round.', '', 'Status:', *status, '', *sections, '## Commands', '',
      '```', commands, '```'])
  print(report_lib.write_doc(os.path.join(_DOCS.value, 'methods.md'), text))


def main(argv):
  del argv
  report_lib.run_study(
      settings=SETTINGS, chosen_settings=_SETTINGS.value, variants=VARIANTS,
      chosen_variants=_VARIANTS.value, command=command, rounds=_ROUNDS.value,
      report=report if _REPORT.value else None, finished=finished)


if __name__ == '__main__':
  app.run(main)
