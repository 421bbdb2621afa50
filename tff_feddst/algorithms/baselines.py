"""The paper's baselines: the FedDST builder with other arguments, nothing more."""

from __future__ import annotations

from tff_feddst.algorithms import registry
from tff_feddst.algorithms.feddst import build_weighted_feddst


def build_weighted_fed_avg(model_fn, **kwargs):
  """FedAvg: dense (S = 0), no readjustment."""
  return build_weighted_feddst(model_fn, sparsity=0.0, readjustment_ratio=0.0,
                               **kwargs)


def build_weighted_fed_avgm(model_fn, *, server_optimizer_fn, **kwargs):
  """FedAvgM: FedAvg with a server optimizer (e.g. SGD with momentum 0.9)."""
  return build_weighted_fed_avg(model_fn, server_optimizer_fn=server_optimizer_fn,
                                **kwargs)


def build_weighted_fed_prox(model_fn, *, prox_mu: float, **kwargs):
  """FedProx: FedAvg whose clients add μ (w - w_global) to their gradients."""
  registry.check_builder_args('fedprox', {'prox_mu': prox_mu})
  return build_weighted_fed_avg(model_fn, prox_mu=prox_mu, **kwargs)


def build_weighted_random_mask(model_fn, *, sparsity: float, **kwargs):
  """RandomMask: a static mask (magnitude of the random init), never readjusted."""
  return build_weighted_feddst(model_fn, sparsity=sparsity,
                               readjustment_ratio=0.0, **kwargs)

