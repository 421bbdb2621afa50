"""Importing TensorFlow after absl's `app.run` has started (for instant CLIs).

A launcher that imports TensorFlow inside `main()` (so that `--help` and flag
errors answer at once) used to fail when it built a Keras Sequential with a
Conv2D: "Output tensors of a Sequential model must be the output of a
TensorFlow `Layer`". The cause, traced in TF 2.14: early in
`tensorflow/__init__.py`, `tensorflow/python/distribute/combinations.py`
registers `absl.app.call_after_init(_set_total_phsyical_gpus)`. Once app.run
has initialised, absl runs such a callback at once — here in the middle of
`import tensorflow`, before TF has switched on eager execution. The callback
creates TF's eager context, whose thread-local stack of context switches is
then born without its eager entry; from then on
`executing_eagerly_outside_functions()` is False inside any graph, so Keras
builds `Input` as a graph placeholder instead of a KerasTensor, and
Sequential's functional check fails.

`import_tensorflow()` defers absl's init callbacks during the import and runs
them right after it, when the context is created in eager mode (what happens
anyway when TF is imported before app.run).
"""

from __future__ import annotations

import sys


def import_tensorflow():
  """Imports and returns `tensorflow`, safe inside absl's `main()`."""
  if 'tensorflow' in sys.modules:
    return sys.modules['tensorflow']
  from absl import app  # pylint: disable=g-import-not-at-top
  # absl keeps "initialised" as an attribute of its private `_run_init`.
  run_init = getattr(app, '_run_init', None)
  initialised = getattr(run_init, 'done', False)
  if initialised:
    run_init.done = False  # call_after_init queues instead of calling.
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  finally:
    if initialised:
      run_init.done = True
      queued = getattr(app, '_init_callbacks', ())
      while queued:
        queued.popleft()()
  return tf
