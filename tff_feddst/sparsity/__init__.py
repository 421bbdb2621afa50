"""Sparse-mask math: layer densities, magnitude prune, gradient regrow, schedules."""

from tff_feddst.sparsity.densities import DISTRIBUTIONS
from tff_feddst.sparsity.densities import layer_densities
from tff_feddst.sparsity.densities import layer_live_counts
from tff_feddst.sparsity.masks import hamming_distance
from tff_feddst.sparsity.masks import keep_top_k_lexicographic
from tff_feddst.sparsity.masks import prune_by_magnitude
from tff_feddst.sparsity.masks import readjust
from tff_feddst.sparsity.masks import Readjustment
from tff_feddst.sparsity.masks import regrow_by_gradient
from tff_feddst.sparsity.schedules import is_readjustment_round
from tff_feddst.sparsity.schedules import readjustment_fraction
from tff_feddst.sparsity.schedules import SCHEDULES
from tff_feddst.sparsity.schedules import sparsity_at_round
from tff_feddst.sparsity.server_masks import next_global_mask
