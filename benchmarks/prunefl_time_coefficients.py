"""PruneFL's per-layer compute seconds per weight, measured on this machine.

  uv run python benchmarks/prunefl_time_coefficients.py --model=mnist_cnn \
      --output=benchmarks/prunefl_times/mnist_cnn_b32.json
  uv run python launchers/train.py --algorithm=prunefl \
      --prunefl_time_coefficients=benchmarks/prunefl_times/mnist_cnn_b32.json

The authors' round-time model takes measured per-layer coefficients: the
seconds one live weight of layer l adds to a local step on their device
(jiangyuang/PruneFL `configs/*.py`, `COMP_COEFFICIENTS_SINGLE`), and the
step time of the pruned model (`SPARSE_TIME`). This measures their analogue
for one of our models (`sparsity.prunefl.MeasuredCompute`), as the closest
honest measurement we can make:

  T        one local step of our clients, timed: forward and loss, the
           gradient, coupled L2, the client optimizer (SGD with momentum),
           the masks applied — restated from `templates.client_work` on a
           TF-MOT-wrapped model, all masks ones, --steps steps in one graph
           on one batch of random inputs of --batch_size (dense kernels
           take the same time whatever the values);
  T_-l     the same step with prunable layer l's weights absent: the layer
           is replaced by a stand-in that outputs its bias (through its
           activation) in its output shape and sends a zero gradient back,
           so the layers before it do all of their backward work;
  T_0      every prunable layer absent (the mask-independent work).

  seconds_per_weight_per_example[l] = max(0, T − T_-l) / (B · n_l)
  base_seconds_per_example          = T_0 / B

Our clients compute every kernel densely (a pruned weight is an entry
multiplied by 0), so here a live weight costs no time at all; these numbers
are what a client whose kernels cost in proportion to their live weights
would save per weight, the authors' sparse kernels' premise (their model is
linear in the live count too). The variants are interleaved, each repeat
runs all of them once in a rotated order, and each time is the minimum over
--repeats (--statistic: other work on a shared machine only adds time; the
median is the alternative); the file records the median and spread (max −
min) too, and the load average, as the differences of small layers come
close to the noise. Clipping at 0 is what a negative difference (noise)
becomes.
"""

from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
from tff_feddst import quiet  # pylint: disable=g-import-not-at-top,wrong-import-position

_TF_LOG_LEVEL = quiet.silence_from_argv()  # Before TensorFlow is imported.

# pylint: disable=g-import-not-at-top,wrong-import-position
import inspect
import json
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import models
from tff_feddst.models import zoo
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.sparsity import prunefl
# pylint: enable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_enum('model', 'mnist_cnn', sorted(zoo.MODELS),
                           'The model (tff_feddst.models.zoo).')
_INPUT_SHAPE = flags.DEFINE_list('input_shape', None,
                                 "Input shape; default: the model's own.")
_NUM_CLASSES = flags.DEFINE_integer('num_classes', None,
                                    "Classes; default: the model's own.")
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Examples per local step.',
                              lower_bound=1)
_STEPS = flags.DEFINE_integer('steps', 50, 'Steps per timed call.',
                              lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 15, 'Timed calls per variant.',
                                lower_bound=1)
_STATISTIC = flags.DEFINE_enum(
    'statistic', 'min', ['min', 'median'],
    'Of the repeats: min (other work on a shared machine only adds time) or '
    'median.')
_LEARNING_RATE = flags.DEFINE_float('client_learning_rate', 0.01, 'SGD lr.')
_MOMENTUM = flags.DEFINE_float('client_momentum', 0.9, 'SGD momentum.')
_DECAY = flags.DEFINE_float('client_weight_decay', 1e-3, 'Coupled L2.')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the JSON here.')
quiet.define_flag()


class Absent(tf.keras.layers.Layer):
  """A prunable layer with its weights absent: its bias (through its
  activation) in its output shape, a zero gradient back to its input."""

  def __init__(self, like: tf.keras.layers.Layer, **kwargs):
    super().__init__(name=f'{like.name}_absent', **kwargs)
    self._shape = tuple(like.output_shape[1:])
    self._activation = getattr(like, 'activation', None)
    self._use_bias = getattr(like, 'bias', None) is not None

  def build(self, input_shape):
    self.bias = (self.add_weight('bias', shape=self._shape[-1:],
                                 initializer='zeros')
                 if self._use_bias else None)
    # A variable, not a constant, so that no graph rewrite drops the path.
    self.zero = self.add_weight('zero', shape=[], initializer='zeros',
                                trainable=False)

  def call(self, x):
    out = tf.zeros((tf.shape(x)[0],) + self._shape) + self.zero * (
        tf.reduce_sum(x))
    if self.bias is not None:
      out = out + self.bias
    return self._activation(out) if self._activation else out


def _plain_model():
  fn = zoo.MODELS[_MODEL.value]
  defaults = inspect.signature(fn).parameters
  shape = (tuple(int(d) for d in _INPUT_SHAPE.value) if _INPUT_SHAPE.value
           else defaults['input_shape'].default)
  classes = _NUM_CLASSES.value or defaults['num_classes'].default
  return fn(shape, classes), shape, classes


def _variant(plain, absent: set[str], prunable: list[str]):
  """`plain` with the named layers absent, wrapped as our clients' models
  (unless no prunable layer is left)."""
  def clone(layer):
    if isinstance(layer, tf.keras.layers.InputLayer):
      return layer.__class__.from_config(layer.get_config())
    if layer.name in absent:
      return Absent(layer)
    return layer.__class__.from_config(layer.get_config())
  model = tf.keras.models.clone_model(plain, clone_function=clone)
  if set(prunable) <= absent:
    return model
  return models.make_prunable(model, log=False)


def _timed_step(wrapped, x, y):
  """A no-arg function running --steps client steps in one graph call."""
  trainable = list(wrapped.trainable_weights)
  refs = [v.ref() for v in trainable]
  mask_of = {refs.index(p.kernel.ref()): p.mask
             for p in models.masked_kernels(wrapped)}
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  optimizer = tff.learning.optimizers.build_sgdm(
      _LEARNING_RATE.value, momentum=_MOMENTUM.value)
  specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
  decay = _DECAY.value

  @tf.function
  def run(opt_state):
    for _ in tf.range(_STEPS.value):
      with tf.GradientTape() as tape:
        loss = loss_fn(y, wrapped(x, training=True))
      grads = tape.gradient(loss, trainable)
      grads = [g + decay * w for g, w in zip(grads, trainable)]
      opt_state, updated = optimizer.next(opt_state, tuple(trainable),
                                          tuple(grads))
      for i, (v, u) in enumerate(zip(trainable, updated)):
        v.assign(u * mask_of[i] if i in mask_of else u)
    return opt_state

  state = optimizer.initialize(specs)
  run(state)  # Trace and warm up.

  def timed():
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), run(state))
    return (time.perf_counter() - start) / _STEPS.value

  return timed


def measure() -> dict:
  tf.keras.utils.set_random_seed(0)
  plain, shape, classes = _plain_model()
  full = models.make_prunable(plain, log=False)
  layout = layout_lib.build_layout(full, 0.0, 'uniform')
  wrappers = models.prunable_wrappers(full)
  if any(len(w.pruning_vars) != 1 for w in wrappers):
    raise ValueError('Each prunable layer must hold one kernel.')
  names = [w.layer.name for w in wrappers]
  rng = np.random.default_rng(0)
  x = tf.constant(rng.random((_BATCH.value,) + tuple(shape), np.float32))
  y = tf.constant(rng.integers(0, classes, _BATCH.value).astype(np.int32))
  variants = {'full': set(), 'none': set(names)}
  variants.update({f'without_{n}': {n} for n in names})
  steps = {k: _timed_step(_variant(plain, v, names), x, y)
           for k, v in variants.items()}
  load_before = os.getloadavg()
  times = {k: [] for k in steps}
  keys = list(steps)
  for r in range(_REPEATS.value):
    for k in keys[r % len(keys):] + keys[:r % len(keys)]:
      times[k].append(steps[k]())
  load_after = os.getloadavg()
  pick = min if _STATISTIC.value == 'min' else statistics.median
  step = {k: pick(v) for k, v in times.items()}
  b = _BATCH.value
  layers = []
  for name, n in zip(names, layout.kernel_sizes):
    without = times[f'without_{name}']
    saved = step['full'] - step[f'without_{name}']
    layers.append(dict(
        name=name, weights=n, step_seconds_without=step[f'without_{name}'],
        step_seconds_saved=saved,
        step_seconds_saved_median=statistics.median(times['full']) -
        statistics.median(without),
        spread_seconds=max(without) - min(without),
        seconds_per_weight_per_step=max(saved, 0.0) / n))
  return dict(
      kernel_sizes=list(layout.kernel_sizes),
      seconds_per_weight_per_example=[
          l['seconds_per_weight_per_step'] / b for l in layers],
      base_seconds_per_example=step['none'] / b,
      model=_MODEL.value, input_shape=list(shape), num_classes=classes,
      batch_size=b, steps_per_call=_STEPS.value, repeats=_REPEATS.value,
      statistic=_STATISTIC.value, step_seconds_full=step['full'],
      step_seconds_full_spread=max(times['full']) - min(times['full']),
      step_seconds_all_absent=step['none'], layers=layers,
      load_average_before_after=[load_before[0], load_after[0]],
      cpus=os.cpu_count(),
      tensorflow=tf.__version__,
      measured=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
      note=('measured under load (load average above the CPU count): '
            're-measure on an idle machine for runs that depend on it'
            if max(load_before[0], load_after[0]) > os.cpu_count() else ''),
      method=(f'{_STATISTIC.value} over the repeats of the seconds of one '
              'local step (benchmarks/prunefl_time_coefficients.py): full − '
              'with the layer absent, / (batch · weights), clipped at 0; '
              'base = all prunable layers absent / batch'))


def main(argv):
  del argv
  quiet.filter_library_logs(_TF_LOG_LEVEL)
  if _TF_LOG_LEVEL == quiet.DEFAULT_LEVEL:  # Each variant traces its own
    tf.get_logger().setLevel('ERROR')     # step: no retracing to warn of.
  result = measure()
  prunefl.load_measured_compute(result)  # What the launcher will accept.
  text = json.dumps(result, indent=1)
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)),
                exist_ok=True)
    with open(_OUTPUT.value, 'w', encoding='utf-8') as f:
      f.write(text + '\n')
  print(f'{"layer":>8} {"weights":>8} {"saved ms/step":>14} '
        f'{"(median)":>9} {"spread ms":>10} {"s/weight/example":>17}')
  for l, c in zip(result['layers'], result['seconds_per_weight_per_example']):
    print(f'{l["name"]:>8} {l["weights"]:>8} '
          f'{1e3 * l["step_seconds_saved"]:>14.3f} '
          f'{1e3 * l["step_seconds_saved_median"]:>9.3f} '
          f'{1e3 * l["spread_seconds"]:>10.3f} {c:>17.3e}')
  print(f'{result["statistic"]} over {result["repeats"]} repeats of '
        f'{result["steps_per_call"]} steps; full step '
        f'{1e3 * result["step_seconds_full"]:.3f} ms (spread '
        f'{1e3 * result["step_seconds_full_spread"]:.3f}), all absent '
        f'{1e3 * result["step_seconds_all_absent"]:.3f} ms; base '
        f'{result["base_seconds_per_example"]:.3e} s/example; batch '
        f'{result["batch_size"]}; load average '
        f'{result["load_average_before_after"]} on {result["cpus"]} CPUs')
  if result['note']:
    print(result['note'])
  if _OUTPUT.value:
    print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
