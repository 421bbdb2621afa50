"""The README's Quickstart runs as written, the export snippet of
docs/production.md runs after it, and the README's test command is CI's."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
PRODUCTION = REPO / 'docs' / 'production.md'


def _block(path: pathlib.Path, heading: str) -> str:
  """The first ```python block after the line '## heading'."""
  section = path.read_text().split(f'\n## {heading}\n', 1)[1]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_quickstart_learns_and_the_export_snippet_runs_after_it(
    capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  namespace = {}
  exec(compile(_block(README, 'Quickstart'), 'README-quickstart', 'exec'),
       namespace)
  lines = [l.split() for l in capsys.readouterr().out.strip().splitlines()]
  rows = [l for l in lines if len(l) == 3 and l[0].isdigit()]
  assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
  assert all(0.0 <= float(r[1]) <= 1.0 and int(r[2]) > 0 for r in rows)
  # It visibly learns (chance is 0.1).
  assert float(rows[-1][1]) > 0.6 > float(rows[0][1])
  exec(compile(_block(PRODUCTION, 'Export'), 'production-export', 'exec'),
       namespace)
  assert (tmp_path / 'out' / 'model_sparse.tflite').exists()
  assert 'model_sparse_int8.tflite' in capsys.readouterr().out


def test_the_readme_test_command_is_the_one_ci_runs():
  ci = [l for l in (REPO / '.ci' / 'run').read_text().splitlines()
        if 'pytest' in l]
  assert ci == ['uv run pytest -q']
  assert '```\nuv run pytest -q\n```' in README.read_text()
