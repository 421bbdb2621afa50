"""Package attributes loaded on first use (PEP 562).

`tff_feddst.algorithms` and `tff_feddst.program` re-export names whose modules
import TensorFlow; loading them lazily keeps the TF-free modules of those
packages (the registry, run paths, locks, hparams) importable by command lines
that answer before TensorFlow loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable, Callable]:
  """(`__getattr__`, `__dir__`) for `package`: name -> its submodule's name."""

  def __getattr__(name):  # pylint: disable=invalid-name
    if name in exports:
      module = importlib.import_module(f'{package}.{exports[name]}')
      return getattr(module, name)
    raise AttributeError(f'module {package!r} has no attribute {name!r}')

  def __dir__():  # pylint: disable=invalid-name
    return sorted(set(importlib.import_module(package).__dict__) |
                  set(exports))

  return __getattr__, __dir__
