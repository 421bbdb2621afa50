"""The modules a launcher reads before TensorFlow loads import without it.

A launcher checks its flags, its data files and its run directory in under
a second, and only then pays the ~10 s TensorFlow import; each module below
is on that path. A fresh interpreter per module: one that pulls TensorFlow
in is named alone.
"""

import subprocess
import sys

import pytest

TF_FREE = ('tff_feddst.choices', 'tff_feddst.data.catalog',
           'tff_feddst.data.presence', 'tff_feddst.data.sources',
           'tff_feddst.algorithms.registry', 'tff_feddst.privacy.accounting',
           'tff_feddst.sparsity.budgets', 'tff_feddst.sparsity.densities',
           'tff_feddst.program.paths', 'tff_feddst.program.run_lock',
           'tff_feddst.program.hparams')


@pytest.mark.parametrize('module', TF_FREE)
def test_imports_without_tensorflow(module):
  code = (f'import sys, {module}; print(sorted(m for m in sys.modules if '
          'm.split(".")[0] in ("tensorflow", "tensorflow_federated", '
          '"keras")))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True).stdout
  assert out.strip() == '[]'
