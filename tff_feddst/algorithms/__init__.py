"""FedDST and its baselines as `tff.learning.templates.LearningProcess`es.

The builders are loaded on first use, so that `tff_feddst.algorithms.registry`
(the launcher's algorithm table) imports without TensorFlow.
"""

from tff_feddst import lazy_exports

_EXPORTS = {
    'build_weighted_fed_avg': 'baselines',
    'build_weighted_fed_avgm': 'baselines',
    'build_weighted_fed_prox': 'baselines',
    'build_weighted_random_mask': 'baselines',
    'Components': 'skeleton',
    'build_feddst_components': 'feddst',
    'build_weighted_feddst': 'feddst',
    'FedDSTComponents': 'feddst',
    'build_flash_components': 'flash',
    'build_weighted_flash': 'flash',
    'build_prunefl_components': 'prunefl',
    'build_weighted_prunefl': 'prunefl',
    'build_sparsyfed_components': 'sparsyfed',
    'build_weighted_sparsyfed': 'sparsyfed',
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports.lazy_exports(__name__, _EXPORTS)
