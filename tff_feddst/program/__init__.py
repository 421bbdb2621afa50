"""The training program on `tff.program`: sampling, checkpoints, releases, evaluation.

Loaded on first use, so that the TF-free parts (`paths`, `run_lock`, `hparams`)
serve command lines that answer before TensorFlow is imported.
"""

import importlib

_EXPORTS = {
    'Evaluator': 'evaluation',
    'mean_client_accuracy': 'evaluation',
    'check_hparams': 'hparams',
    'HparamsMismatchError': 'hparams',
    'read_hparams': 'hparams',
    'RESULT_NEUTRAL_KEYS': 'hparams',
    'write_or_check_hparams': 'hparams',
    'Interrupted': 'interrupts',
    'signals_raise': 'interrupts',
    'flatten_metrics': 'metrics',
    'RunPaths': 'paths',
    'write_atomic': 'paths',
    'hold_run_directory': 'run_lock',
    'RunDirectoryInUseError': 'run_lock',
    'batch_input_spec': 'sampling',
    'client_shuffle_seed': 'sampling',
    'round_datasets': 'sampling',
    'sample_clients': 'sampling',
    'load_model_weights': 'train_loop',
    'NoUsableCheckpointError': 'train_loop',
    'run_hparams': 'train_loop',
    'save_model_weights': 'train_loop',
    'train': 'train_loop',
    'TrainConfig': 'train_loop',
    'TrainingInterrupted': 'train_loop',
    'TrainResult': 'train_loop',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f'{__name__}.{_EXPORTS[name]}')
    return getattr(module, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + __all__)
