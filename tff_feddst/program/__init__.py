"""The training program on `tff.program`: sampling, checkpoints, releases, evaluation."""

from tff_feddst.program.evaluation import Evaluator
from tff_feddst.program.evaluation import mean_client_accuracy
from tff_feddst.program.hparams import check_hparams
from tff_feddst.program.hparams import HparamsMismatchError
from tff_feddst.program.hparams import read_hparams
from tff_feddst.program.hparams import RESULT_NEUTRAL_KEYS
from tff_feddst.program.hparams import write_or_check_hparams
from tff_feddst.program.interrupts import Interrupted
from tff_feddst.program.interrupts import signals_raise
from tff_feddst.program.metrics import flatten_metrics
from tff_feddst.program.paths import RunPaths
from tff_feddst.program.paths import write_atomic
from tff_feddst.program.run_lock import hold_run_directory
from tff_feddst.program.run_lock import RunDirectoryInUseError
from tff_feddst.program.sampling import batch_input_spec
from tff_feddst.program.sampling import client_shuffle_seed
from tff_feddst.program.sampling import round_datasets
from tff_feddst.program.sampling import sample_clients
from tff_feddst.program.train_loop import load_model_weights
from tff_feddst.program.train_loop import NoUsableCheckpointError
from tff_feddst.program.train_loop import run_hparams
from tff_feddst.program.train_loop import save_model_weights
from tff_feddst.program.train_loop import train
from tff_feddst.program.train_loop import TrainConfig
from tff_feddst.program.train_loop import TrainingInterrupted
from tff_feddst.program.train_loop import TrainResult
