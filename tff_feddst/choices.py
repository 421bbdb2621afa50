"""The names the command line offers, in one place that loads no TensorFlow.

The algorithm registry and the launchers read them here, so that `--help`
and a refused flag answer before TensorFlow is imported; the modules that
implement each name take their tables from here too, so the two cannot
differ.
"""

PARTITIONS = ('dirichlet', 'k_class', 'iid')
MODELS = ('mnist_cnn', 'cifar_cnn', 'femnist_cnn', 'digits_cnn', 'mlp')
SPARSITY_DISTRIBUTIONS = ('uniform', 'er', 'erk', 'feddst_erk')
READJUSTMENT_SCHEDULES = ('cosine', 'constant')
UPLOAD_DTYPES = ('float32', 'bfloat16', 'float16')
PRUNEFL_FLOPS = 'flops'  # PruneFL's FLOP-derived compute times.
