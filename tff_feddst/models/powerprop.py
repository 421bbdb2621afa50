"""Powerpropagation layers with SparsyFed's activation pruning.

Powerpropagation (Schwarz et al., NeurIPS 2021), as SparsyFed (Guastella et
al., ICLR 2025, arXiv 2504.05153) uses it: a re-parameterised layer holds v in
its `kernel` variable and computes with the effective weight

    w = sign(v)·|v|^β,        ∂L/∂v = β·|v|^(β−1)·∂L/∂w.

For β > 1 the gradient of a zero v is exactly 0 (and so is an L2 term λv), so
a weight that is 0 stays 0 under SGD with momentum and weight decay.
`powerprop_model` turns a plain Sequential/functional Keras model into one
whose Dense and Conv2D layers are re-parameterised; every other layer is
cloned as it is. The clone has the same variables in the same order (v where
the plain model has w), so a model's `ModelWeights` keep their structure and
`effective_kernel` / `inverse_kernel` convert between the two.

Activation pruning (SparsyFed, §3.3 of docs/notes/field_methods.md): while
training, the weight gradient of a re-parameterised layer is computed from
its input x̃ = x with all but the ⌈(1−s_l)·numel(x)⌉ largest |x| zeroed (one
threshold over the whole batch tensor; entries tied with the threshold are
kept), where s_l is the fraction of exact zeros in the layer's effective
weight at that step. The forward output and the input gradient use the exact
x. The threshold is recomputed on every batch for Dense and Conv2D alike (the
authors' conv code fixes it from the first batch a model instance sees; we do
not). At evaluation (`training` false) nothing is pruned.

The layers implement TF-MOT's `PrunableLayer` (prunable weight: the kernel,
i.e. v), so `models.make_prunable` wraps them and keeps their masks in TF-MOT's
variables as for plain layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer

from tff_feddst.models import prunable as prunable_lib

_PACKAGE = 'tff_feddst'


def check_beta(beta: float) -> float:
  beta = float(beta)
  if not beta >= 1.0:  # Also refuses NaN.
    raise ValueError(f'Powerpropagation needs beta >= 1 (1: plain training), '
                     f'got {beta!r}.')
  return beta


def effective_kernel(v, beta: float) -> tf.Tensor:
  """w = sign(v)·|v|^β, with the gradient β·|v|^(β−1)·∂L/∂w (0 at v = 0)."""
  v = tf.convert_to_tensor(v)
  if beta == 1.0:
    return tf.identity(v)

  @tf.custom_gradient
  def signed_power(v):
    magnitude = tf.abs(v)

    def grad(dw):
      return dw * beta * tf.pow(magnitude, beta - 1.0)

    return tf.sign(v) * tf.pow(magnitude, beta), grad

  return signed_power(v)


def inverse_kernel(w, beta: float) -> tf.Tensor:
  """v = sign(w)·|w|^(1/β), the v whose effective weight is w."""
  w = tf.convert_to_tensor(w)
  if beta == 1.0:
    return tf.identity(w)
  return tf.sign(w) * tf.pow(tf.abs(w), 1.0 / beta)


def prune_activations(x, weight) -> tf.Tensor:
  """x with all but its top ⌈(1−s)·numel(x)⌉ |x| zeroed, s = zeros of `weight`.

  k is computed exactly in integers: ⌈nnz(weight)·numel(x)/size(weight)⌉, at
  least 1. Entries equal to the k-th largest |x| are all kept. A dense weight
  (s = 0) returns x itself.
  """
  size = int(np.prod(weight.shape.as_list()))
  nnz = tf.math.count_nonzero(weight, dtype=tf.int64)
  magnitude = tf.abs(x)

  def pruned():
    flat = tf.reshape(magnitude, [-1])
    numel = tf.size(flat, out_type=tf.int64)
    k = tf.maximum((nnz * numel + size - 1) // size, 1)
    # The k-th largest |x|, exact as the authors' torch.topk; tf.math.top_k
    # and a radix select were no faster inside training.
    threshold = tf.sort(flat, direction='DESCENDING')[k - 1]
    return tf.where(magnitude >= threshold, x, tf.zeros_like(x))

  return tf.cond(nnz < size, pruned, lambda: tf.identity(x))


def matmul_with_pruned_weight_grad(x, w) -> tf.Tensor:
  """x @ w; ∂/∂x = g wᵀ (exact), ∂/∂w = x̃ᵀ g with x̃ = `prune_activations`."""

  @tf.custom_gradient
  def matmul(x, w):
    kept = prune_activations(x, w)

    def grad(dy):
      return (tf.matmul(dy, w, transpose_b=True),
              tf.matmul(kept, dy, transpose_a=True))

    return tf.matmul(x, w), grad

  return matmul(x, w)


def conv2d_with_pruned_weight_grad(x, w, *, strides, padding, dilations,
                                   data_format='NHWC') -> tf.Tensor:
  """tf.nn.convolution (2-D) whose filter gradient uses `prune_activations`."""
  strides, dilations = list(strides), list(dilations)
  if data_format == 'NHWC':
    strides4, dilations4 = [1] + strides + [1], [1] + dilations + [1]
  else:
    strides4, dilations4 = [1, 1] + strides, [1, 1] + dilations

  @tf.custom_gradient
  def conv(x, w):
    kept = prune_activations(x, w)

    def grad(dy):
      dx = tf.raw_ops.Conv2DBackpropInput(
          input_sizes=tf.shape(x), filter=w, out_backprop=dy,
          strides=strides4, padding=padding, dilations=dilations4,
          data_format=data_format)
      dw = tf.raw_ops.Conv2DBackpropFilter(
          input=kept, filter_sizes=tf.shape(w), out_backprop=dy,
          strides=strides4, padding=padding, dilations=dilations4,
          data_format=data_format)
      return dx, dw

    return tf.nn.convolution(x, w, strides=strides, padding=padding,
                             dilations=dilations,
                             data_format=data_format), grad

  return conv(x, w)


def _training_flag(training):
  """Python bool of Keras' `training` argument (None: inference)."""
  if training is None:
    return False
  if isinstance(training, (bool, np.bool_)):
    return bool(training)
  return tf.get_static_value(training)


class _PowerpropMixin(prunable_layer.PrunableLayer):
  """Shared by the layers: β, the switch, init and TF-MOT's prunable weight."""

  def _init_powerprop(self, beta: float, activation_pruning: bool):
    self.beta = check_beta(beta)
    self.activation_pruning = bool(activation_pruning)

  def build(self, input_shape):
    # v is initialised so that w = sign(v)|v|^β has the layer's own init law:
    # v = sign(u)|u|^(1/β) with u drawn from the configured initializer.
    base = self.kernel_initializer
    beta = self.beta
    self.kernel_initializer = lambda shape, dtype=None, **kw: inverse_kernel(
        base(shape, dtype=dtype, **kw), beta)
    try:
      super().build(input_shape)
    finally:
      self.kernel_initializer = base

  def effective_kernel(self) -> tf.Tensor:
    return effective_kernel(self.kernel, self.beta)

  def get_prunable_weights(self):
    return [self.kernel]

  def get_config(self):
    config = super().get_config()
    config.update(beta=self.beta, activation_pruning=self.activation_pruning)
    return config

  def _dispatch(self, inputs, training, run):
    if not self.activation_pruning:
      return run(inputs, False)
    flag = _training_flag(training)
    if flag is None:  # A symbolic training flag.
      return tf.cond(tf.cast(training, tf.bool), lambda: run(inputs, True),
                     lambda: run(inputs, False))
    return run(inputs, bool(flag))


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class PowerpropDense(_PowerpropMixin, tf.keras.layers.Dense):
  """`tf.keras.layers.Dense` computing with w = sign(v)|v|^β (see module)."""

  def __init__(self, units, *, beta: float = 1.25,
               activation_pruning: bool = True, **kwargs):
    super().__init__(units, **kwargs)
    self._init_powerprop(beta, activation_pruning)

  def call(self, inputs, training=None):
    return self._dispatch(inputs, training, self._forward)

  def _forward(self, inputs, prune: bool):
    if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
      raise TypeError(f'{self.name}: PowerpropDense takes dense tensors, got '
                      f'{type(inputs).__name__}.')
    x = tf.cast(inputs, self._compute_dtype_object)
    w = self.effective_kernel()
    rank = x.shape.rank
    flat = x if rank == 2 else tf.reshape(x, [-1, w.shape[0]])
    y = (matmul_with_pruned_weight_grad(flat, w) if prune else
         tf.matmul(flat, w))
    if rank != 2:
      y = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.units]], 0))
      y.set_shape(x.shape[:-1].concatenate([self.units]))
    if self.use_bias:
      y = tf.nn.bias_add(y, self.bias)
    if self.activation is not None:
      y = self.activation(y)
    return y


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class PowerpropConv2D(_PowerpropMixin, tf.keras.layers.Conv2D):
  """`tf.keras.layers.Conv2D` (groups 1) computing with w = sign(v)|v|^β."""

  def __init__(self, filters, kernel_size, *, beta: float = 1.25,
               activation_pruning: bool = True, **kwargs):
    super().__init__(filters, kernel_size, **kwargs)
    if self.groups != 1:
      raise ValueError(f'{self.name}: PowerpropConv2D supports groups=1, got '
                       f'{self.groups}.')
    self._init_powerprop(beta, activation_pruning)
    self._prune_now = False

  def call(self, inputs, training=None):
    return self._dispatch(inputs, training, self._forward)

  def _forward(self, inputs, prune: bool):
    # Conv.call applies `convolution_op` to self.kernel (v), then bias and
    # activation; `convolution_op` below swaps in w and the pruned gradient.
    self._prune_now = prune
    try:
      return super().call(inputs)
    finally:
      self._prune_now = False

  def convolution_op(self, inputs, kernel):
    w = effective_kernel(kernel, self.beta)
    if not self._prune_now:
      return super().convolution_op(inputs, w)
    padding = self.padding.upper()
    return conv2d_with_pruned_weight_grad(
        inputs, w, strides=self.strides, padding=padding,
        dilations=self.dilation_rate, data_format=self._tf_data_format)


def _powerprop_layer(layer, beta: float, activation_pruning: bool):
  """The re-parameterised clone of `layer`, or None if it has no such form."""
  kwargs = dict(beta=beta, activation_pruning=activation_pruning)
  if type(layer) is tf.keras.layers.Dense:  # pylint: disable=unidiomatic-typecheck
    return PowerpropDense.from_config({**layer.get_config(), **kwargs})
  if (type(layer) is tf.keras.layers.Conv2D and  # pylint: disable=unidiomatic-typecheck
      layer.groups == 1):
    return PowerpropConv2D.from_config({**layer.get_config(), **kwargs})
  return None


def powerprop_model(model: tf.keras.Model, beta: float, *,
                    activation_pruning: bool = True,
                    copy_weights: bool = True) -> tf.keras.Model:
  """`model` with every Dense and Conv2D layer re-parameterised.

  Args:
    model: a plain Sequential or functional Keras model.
    beta: β >= 1 (1: w = v, plain training).
    activation_pruning: prune the weight gradient's input while training.
    copy_weights: start from `model`'s weights, with v = sign(w)|w|^(1/β)
      (eagerly); otherwise the clone keeps its own fresh init (v from the
      layers' own initializers by the same map). Use False where variables
      cannot be assigned (inside a TFF computation's graph).

  Raises:
    TypeError: a subclassed model.
    ValueError: a prunable layer (TF-MOT) other than Dense and Conv2D with
      groups 1, which would be pruned without Powerpropagation's guarantee
      that its zeros stay 0.
  """
  beta = check_beta(beta)
  prunable_lib._check_model(model)  # pylint: disable=protected-access
  refused = []

  def clone(layer):
    if isinstance(layer, tf.keras.layers.InputLayer):
      return layer.__class__.from_config(layer.get_config())
    new = _powerprop_layer(layer, beta, activation_pruning)
    if new is not None:
      return new
    if prunable_lib._is_prunable(layer):  # pylint: disable=protected-access
      refused.append(f'{layer.name} ({type(layer).__name__})')
    return layer.__class__.from_config(layer.get_config())

  cloned = tf.keras.models.clone_model(model, clone_function=clone)
  if refused:
    raise ValueError(
        'Powerpropagation re-parameterises Dense and Conv2D (groups=1) '
        f'kernels only; model {model.name!r} has other prunable layers: '
        f'{", ".join(refused)}.')
  if copy_weights:
    set_effective_weights(cloned, [w.numpy() for w in model.weights])
  return cloned


def powerprop_layers(model: tf.keras.Model) -> list[_PowerpropMixin]:
  return [l for l in model.layers if isinstance(l, _PowerpropMixin)]


def set_effective_weights(model: tf.keras.Model,
                          weights: Sequence[np.ndarray]) -> None:
  """Sets a powerprop model from a plain model's `weights` (in its order):
  each re-parameterised kernel gets v = sign(w)|w|^(1/β)."""
  variables = model.weights
  if len(weights) != len(variables):
    raise ValueError(f'Expected {len(variables)} arrays, got {len(weights)}.')
  kernels = {l.kernel.ref(): l.beta for l in powerprop_layers(model)}
  for var, w in zip(variables, weights):
    beta = kernels.get(var.ref())
    var.assign(w if beta is None else inverse_kernel(w, beta))
