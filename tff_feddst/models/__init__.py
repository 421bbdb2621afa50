"""Prunable Keras models: TF-MOT wrapping, mask access, and the paper's networks."""

from tff_feddst.models.losses import loss_instance
from tff_feddst.models.prunable import apply_initial_masks
from tff_feddst.models.prunable import bias_sizes
from tff_feddst.models.prunable import get_masks
from tff_feddst.models.prunable import kernel_shapes
from tff_feddst.models.prunable import make_prunable
from tff_feddst.models.prunable import masked_kernels
from tff_feddst.models.prunable import MaskedKernel
from tff_feddst.models.prunable import NeverPrune
from tff_feddst.models.prunable import prunable_wrappers
from tff_feddst.models.prunable import pruning_bookkeeping
from tff_feddst.models.prunable import set_masks
from tff_feddst.models.prunable import strip
from tff_feddst.models.prunable import target_live_counts
from tff_feddst.models.tff_model import keras_model_from_weights
from tff_feddst.models.tff_model import masked_model_fn
from tff_feddst.models.zoo import cifar_cnn
from tff_feddst.models.zoo import digits_cnn
from tff_feddst.models.zoo import femnist_cnn
from tff_feddst.models.zoo import get_model_fn
from tff_feddst.models.zoo import mlp
from tff_feddst.models.zoo import mnist_cnn
from tff_feddst.models.zoo import MODELS
from tff_feddst.models.warm_start import copy_weights
from tff_feddst.models.warm_start import IncompatibleModelError
from tff_feddst.models.warm_start import load_keras_model
