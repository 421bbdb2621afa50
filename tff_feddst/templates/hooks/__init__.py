"""Each method's client-side rules, one `ClientHook` a module (`hooks.base`).

Loaded on first use, so that the core (`templates.client_work`, which
imports `hooks.base`) does not import every method's rules.
"""

from tff_feddst import lazy_exports

_EXPORTS = {
    'ClientHook': 'base',
    'ClientRound': 'base',
    'budget_data_type': 'budgets',
    'budget_dataset': 'budgets',
    'DensityBudgets': 'budgets',
    'FedDSTReadjustment': 'feddst_readjust',
    'FlashDST': 'flash_dst',
    'PruneFLImportance': 'prunefl_importance',
    'SparsyFedGlobalPrune': 'sparsyfed_prune',
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports.lazy_exports(__name__, _EXPORTS)
