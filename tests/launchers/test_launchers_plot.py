"""launchers/plot.py on two tiny run directories."""

from launcher_helpers import PLOT, run_script

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def test_plot_writes_pngs(launcher_runs, tmp_path):
  out = tmp_path / 'plots'
  result = run_script(PLOT, f'--run_dirs={launcher_runs.full_dir},'
                      f'{launcher_runs.resumed_dir}', f'--output_dir={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  names = sorted(p.name for p in out.iterdir())
  assert names == ['accuracy_vs_rounds.png', 'accuracy_vs_uplink.png']
  for name in names:
    data = (out / name).read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_plot_names_a_directory_that_is_not_a_run(tmp_path):
  result = run_script(PLOT, f'--run_dirs={tmp_path}',
                      f'--output_dir={tmp_path / "plots"}')
  assert result.returncode != 0
  assert 'metrics.csv not found' in result.stderr
  assert 'Traceback' not in result.stderr
