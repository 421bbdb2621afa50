"""Sparse-mask math: layer densities, magnitude prune, gradient regrow, schedules.

The names are loaded on first use (`tff_feddst.lazy_exports`), so that the
TF-free modules (`budgets`, `densities`) serve the registry and the
launcher's flag checks without importing TensorFlow.
"""

import importlib

from tff_feddst import lazy_exports

_EXPORTS = {
    'DISTRIBUTIONS': 'densities',
    'layer_densities': 'densities',
    'layer_live_counts': 'densities',
    'hamming_distance': 'masks',
    'keep_top_k_lexicographic': 'masks',
    'prune_by_magnitude': 'masks',
    'readjust': 'masks',
    'Readjustment': 'masks',
    'regrow_by_gradient': 'masks',
    'is_readjustment_round': 'schedules',
    'readjustment_fraction': 'schedules',
    'SCHEDULES': 'schedules',
    'sparsity_at_round': 'schedules',
    'next_global_mask': 'server_masks',
    'global_magnitude_masks': 'global_magnitude',
}
_SUBMODULES = ('budgets', 'budgets_tf', 'densities', 'flash',
               'global_magnitude', 'masks', 'prunefl', 'prunefl_tf',
               'schedules', 'server_masks')
__all__ = sorted(_EXPORTS)
_exported, __dir__ = lazy_exports.lazy_exports(__name__, _EXPORTS)


def __getattr__(name):
  if name in _SUBMODULES:  # `sparsity.schedules` before anything imported it.
    return importlib.import_module(f'{__name__}.{name}')
  return _exported(name)
