"""FedDST and its baselines as `tff.learning.templates.LearningProcess`es."""

from tff_feddst.algorithms.baselines import build_weighted_fed_avg
from tff_feddst.algorithms.baselines import build_weighted_fed_avgm
from tff_feddst.algorithms.baselines import build_weighted_fed_prox
from tff_feddst.algorithms.baselines import build_weighted_feddst_prox
from tff_feddst.algorithms.baselines import build_weighted_random_mask
from tff_feddst.algorithms.feddst import build_feddst_components
from tff_feddst.algorithms.feddst import build_weighted_feddst
from tff_feddst.algorithms.feddst import FedDSTComponents
from tff_feddst.algorithms.feddst import keras_model_from_weights
