"""What the study drivers (reproduce.py, dynamics.py, methods.py,
production.py) share: reading runs' CSVs, printing their commands, and writing
a doc whose hand-written part below a marker survives regeneration."""

from __future__ import annotations

from collections.abc import Mapping
import csv
import os
import subprocess

from absl import app

from tff_feddst.algorithms import registry
from tff_feddst.program import metrics
from tff_feddst.program import paths

NOTES_MARKER = '<!-- Everything below this line is kept by --report. -->'
INTRO_MARKER = '<!-- Everything above this line is kept by --report. -->'
# The paper's Fashion-MNIST federation and client settings (launcher flags).
PAPER_FLAGS = ('--dataset=fashion_mnist', '--total_clients=400', '--beta=0.1',
               '--clients_per_round=20', '--client_epochs=10',
               '--batch_size=32', '--client_learning_rate=0.01',
               '--client_momentum=0.9', '--client_weight_decay=0.001',
               '--checkpoint_every=5')
BYTES_PER_MB = metrics.BYTES_PER_MB


def read_rows(run_dir: str) -> list[dict]:
  """The rows of a run's results/metrics.csv ([] before its first round)."""
  path = paths.RunPaths.of(run_dir).metrics_csv
  if not path.exists():
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def rounds_recorded(run_dir: str) -> int:
  """The last round in a run's metrics.csv (0 before its first)."""
  rows = read_rows(run_dir)
  return int(rows[-1]['round']) if rows else 0


def archive_run(run_dir: str, archive_dir: str) -> None:
  """Copies the files reports read (hparams.json, results/metrics.csv; ~50 KB
  for 150 rounds) from `run_dir` to `archive_dir`, each atomically: a study
  that outlives its machine keeps its finished runs' records in the repo."""
  source, dest = paths.RunPaths.of(run_dir), paths.RunPaths.of(archive_dir)
  for src, dst in ((source.hparams, dest.hparams),
                   (source.metrics_csv, dest.metrics_csv)):
    paths.write_atomic(dst, src.read_bytes())


def shown_command(args: list[str], repo: str,
                  roots: Mapping[str, str]) -> str:
  """A launcher command as the docs print it: `uv run python` and the script
  relative to `repo`, every path under a run root (a key of `roots`) shown
  under its stand-in (e.g. runs/methods) and every file of the repository
  relative to it, so that a page does not depend on where the runs or the
  repository were kept."""
  shown = []
  for arg in args[2:]:
    for actual, stand_in in sorted(roots.items(), key=lambda r: -len(r[0])):
      if actual and actual.rstrip('/') != stand_in:
        arg = arg.replace(actual.rstrip('/'), stand_in)
    shown.append(arg.replace(repo.rstrip('/') + '/', ''))  # Repo files.
  return ' '.join(['uv run python', os.path.relpath(args[1], repo), *shown])


def value(row, key):
  """A float cell, None when empty or NaN."""
  text = row.get(key, '')
  return float(text) if text not in ('', None, 'nan') else None


def fmt(v) -> str:
  if v is None:
    return '—'
  return f'{v:.3f}' if isinstance(v, float) else str(v)


def write_doc(path: str, generated: str) -> str:
  """Writes `generated` between the hand-written parts kept from `path`,
  atomically: an introduction above `INTRO_MARKER` (if the page has one)
  and the notes below `NOTES_MARKER`."""
  intro = notes = ''
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
    if INTRO_MARKER in text:
      intro = text.split(INTRO_MARKER, 1)[0] + INTRO_MARKER + '\n\n'
    if NOTES_MARKER in text:
      notes = text.split(NOTES_MARKER, 1)[1]
  text = (intro + generated.strip('\n') + '\n\n' + NOTES_MARKER + notes)
  paths.write_atomic(path, text)
  return text


ACCURACY = 'test/client_mean_accuracy'


def evaluations(rows: list[dict], key: str = ACCURACY) -> list[dict]:
  """The rows that hold an evaluation of `key`."""
  return [r for r in rows if value(r, key) is not None]


def best_within_mb(rows: list[dict], mb: float, key: str = ACCURACY):
  """Best `key` among evaluations within `mb` MB of cumulative uplink."""
  within = [value(r, key) for r in evaluations(rows, key)
            if value(r, 'round/cumulative_uplink_bytes') <= mb * BYTES_PER_MB]
  return max(within) if within else None


def tail_mean(rows: list[dict], from_round: int, rounds: int,
              key: str = ACCURACY):
  """Mean `key` over evaluations from `from_round` on; None until the run
  has all `rounds` (a partial tail would not compare)."""
  if not rows or int(rows[-1]['round']) < rounds:
    return None
  tail = [value(r, key) for r in evaluations(rows, key)
          if int(r['round']) >= from_round]
  return sum(tail) / len(tail) if tail else None


def paired_tail_difference(rows: list[dict], reference: list[dict],
                           from_round: int, rounds: int, key: str = ACCURACY):
  """(mean, standard error, n) of `rows` − `reference` over the rounds from
  `from_round` on that both evaluated; None until both runs are complete.

  Runs of one seed evaluate the same clients in the same rounds, so the
  per-round differences cancel the round-to-round swings that dominate each
  curve; their standard error says how far the mean difference can be
  trusted (n − 1 in the variance; 0 when n = 1)."""
  if tail_mean(rows, from_round, rounds, key) is None or tail_mean(
      reference, from_round, rounds, key) is None:
    return None
  ours = {int(r['round']): value(r, key) for r in evaluations(rows, key)}
  theirs = {int(r['round']): value(r, key) for r in evaluations(reference, key)}
  diffs = [ours[r] - theirs[r] for r in sorted(ours.keys() & theirs.keys())
           if r >= from_round]
  return mean_se(diffs)


def paired_runs(run_dir: str, reference_dir: str, from_round: int,
                rounds: int):
  """`paired_tail_difference` of two run directories (None for a run
  against itself)."""
  if os.path.abspath(run_dir) == os.path.abspath(reference_dir):
    return None
  return paired_tail_difference(read_rows(run_dir), read_rows(reference_dir),
                                from_round, rounds)


def fmt_difference(paired) -> str:
  """`paired_tail_difference`'s result as '+0.012 ± 0.004' (— if None)."""
  return '—' if paired is None else f'{paired[0]:+.3f} ± {paired[1]:.3f}'


def mean_se(values) -> tuple[float, float, int] | None:
  """(mean, standard error, n) of `values` (n − 1 in the variance; 0 when
  n = 1); None when there are none."""
  values = [v for v in values if v is not None]
  if not values:
    return None
  n = len(values)
  mean = sum(values) / n
  var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
  return mean, (var / n) ** 0.5, n


def beyond_two_se(stat) -> bool:
  """Whether a `mean_se` of differences is further from 0 than twice its
  standard error, over at least two values (one value has no spread)."""
  return stat is not None and stat[2] >= 2 and abs(stat[0]) > 2 * stat[1]


def fmt_mean_se(stat, *, signed: bool = False) -> str:
  """A `mean_se` as '0.822 ± 0.004' ('+0.046 ± 0.004' when `signed`, and
  bold when `beyond_two_se`; '0.822 (1 seed)' without a spread); — if
  None."""
  if stat is None:
    return '—'
  mean = f'{stat[0]:{"+" if signed else ""}.3f}'
  if stat[2] == 1:
    return f'{mean} (1 seed)'
  text = f'{mean} ± {stat[1]:.3f}'
  return f'**{text}**' if signed and beyond_two_se(stat) else text


def replace_between(path: str, begin: str, end: str, generated: str) -> None:
  """Replaces what lies between the lines `begin` and `end` of `path` with
  `generated`, atomically; the rest of the page is hand-written and kept."""
  with open(path) as f:
    text = f.read()
  if text.count(begin) != 1 or text.count(end) != 1 or (
      text.index(begin) > text.index(end)):
    raise ValueError(f'{path} needs the line {begin!r} once, then the line '
                     f'{end!r} once, around the part that is generated.')
  head, rest = text.split(begin, 1)
  tail = rest.split(end, 1)[1]
  paths.write_atomic(path, head + begin + '\n' + generated.strip('\n') +
                     '\n' + end + tail)


def uplink_mb(rows: list[dict]):
  """Cumulative uplink of the last round, in MB."""
  return (value(rows[-1], 'round/cumulative_uplink_bytes') / BYTES_PER_MB
          if rows else None)


def markdown_table(keys: list[str], rows: list[dict]) -> list[str]:
  """`rows` (dicts with `keys`) as Markdown table lines."""
  return (['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)] +
          ['| ' + ' | '.join(fmt(r.get(k)) for k in keys) + ' |'
           for r in rows])


def refuse_unknown(name: str, known, values) -> None:
  """A usage error naming `--name` when `values` has something not `known`."""
  unknown = sorted(set(values) - set(known))
  if unknown:
    raise app.UsageError(f'--{name}: unknown {unknown}; expected some of '
                         f'{sorted(known)}.')


def check_launcher_args(args: list[str], rounds: int) -> None:
  """A usage error if a launchers/train.py command's algorithm flags are
  invalid (the registry's check), before any run starts."""
  given, algorithm = {}, None
  for arg in args:
    name, _, text = arg[2:].partition('=')
    if name == 'algorithm':
      algorithm = text
    elif name in registry.OPTIONS:
      kind = registry.OPTIONS[name].type
      given[name] = True if kind is bool and not text else kind(text)
  try:
    registry.resolve(algorithm, given, rounds=rounds,
                     size_defaults={'rounds_between_readjustments': 10},
                     flag_prefix='--')
  except registry.OptionError as e:
    raise app.UsageError(f'{" ".join(args)}: {e}') from None


def run_commands(commands) -> None:
  """Runs each command in turn (a complete run returns at once), echoing it."""
  for command in commands:
    print(' '.join(command), flush=True)
    subprocess.run(command, check=True)


def run_study(*, settings, chosen_settings, variants, chosen_variants,
              command, rounds: int, report=None, finished=None) -> None:
  """A settings × variants study driver's main: refuse unknown names and bad
  algorithm flags before any run, then `report()` or every run in order
  (but those `finished(setting, variant)` says are done elsewhere)."""
  refuse_unknown('settings', settings, chosen_settings)
  refuse_unknown('variants', variants, chosen_variants)
  pairs = [(s, v) for s in chosen_settings for v in chosen_variants]
  for s, v in pairs:
    check_launcher_args(command(s, v)[2:], rounds)
  if report is not None:
    report()
    return
  todo = []
  for s, v in pairs:
    if finished is not None and finished(s, v):
      print(f'{s}/{v}: finished (archived); not run again', flush=True)
    else:
      todo.append(command(s, v))
  run_commands(todo)
