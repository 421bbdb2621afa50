"""The training program on `tff.program`: sampling, checkpoints, releases, evaluation.

Loaded on first use, so that the TF-free parts (`paths`, `run_lock`, `hparams`)
serve command lines that answer before TensorFlow is imported.
"""

from tff_feddst import lazy_exports

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
    'initial_client_dataset': 'sampling',
    'round_datasets': 'sampling',
    'sample_clients': 'sampling',
    'load_model_weights': 'checkpoints',
    'NoUsableCheckpointError': 'checkpoints',
    'run_hparams': 'train_loop',
    'save_model_weights': 'checkpoints',
    'train': 'train_loop',
    'TrainConfig': 'train_loop',
    'TrainingInterrupted': 'train_loop',
    'TrainResult': 'train_loop',
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports.lazy_exports(__name__, _EXPORTS)
