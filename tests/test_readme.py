"""The README's Quickstart runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def _block(heading: str) -> str:
  text = README.read_text()
  section = text.split(f'## {heading}', 1)[1]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_quickstart_runs_and_reports_accuracy_and_uplink(capsys):
  exec(compile(_block('Quickstart'), 'README-quickstart', 'exec'), {})
  lines = [l.split() for l in capsys.readouterr().out.strip().splitlines()]
  rows = [l for l in lines if len(l) == 3 and l[0].isdigit()]
  assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
  assert all(0.0 <= float(r[1]) <= 1.0 and int(r[2]) > 0 for r in rows)
  assert float(rows[-1][1]) > float(rows[0][1])
