"""The README's Quickstart runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def _block(heading: str) -> str:
  text = README.read_text()
  section = text.split(f'## {heading}', 1)[1]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_quickstart_learns_and_the_export_snippet_runs_after_it(
    capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  namespace = {}
  exec(compile(_block('Quickstart'), 'README-quickstart', 'exec'), namespace)
  lines = [l.split() for l in capsys.readouterr().out.strip().splitlines()]
  rows = [l for l in lines if len(l) == 3 and l[0].isdigit()]
  assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
  assert all(0.0 <= float(r[1]) <= 1.0 and int(r[2]) > 0 for r in rows)
  # It visibly learns (chance is 0.1).
  assert float(rows[-1][1]) > 0.6 > float(rows[0][1])
  exec(compile(_block('Ship the model'), 'README-export', 'exec'), namespace)
  assert (tmp_path / 'out' / 'model_sparse.tflite').exists()
  assert 'model_sparse_int8.tflite' in capsys.readouterr().out
