"""Datasets for FedDST: local-file readers, seeded partitions, TFF ClientData.

Loaded on first use, so that the TF-free parts (`sources`, `partition`,
`presence`) serve command lines that answer before TensorFlow is imported.
"""

from tff_feddst import lazy_exports

_EXPORTS = {
    'CentralizedData': 'sources',
    'CorruptDatasetError': 'sources',
    'DATASET_NAMES': 'sources',
    'DEBIAN_FASHION_MNIST_DIR': 'sources',
    'DatasetFiles': 'sources',
    'DatasetNotFoundError': 'sources',
    'load': 'sources',
    'load_cifar10': 'sources',
    'load_cifar100': 'sources',
    'load_digits': 'sources',
    'load_fashion_mnist': 'sources',
    'load_mnist': 'sources',
    'locate': 'sources',
    'make_synthetic': 'sources',
    'read_idx': 'sources',
    'EMNIST_FILENAME': 'presence',
    'Partition': 'partition',
    'PartitionSummary': 'partition',
    'dirichlet_partition': 'partition',
    'iid_partition': 'partition',
    'k_class_partition': 'partition',
    'FederatedData': 'federated',
    'PARTITIONS': 'federated',
    'build_federated_data': 'federated',
    'first_clients': 'federated',
    'load_emnist': 'federated',
    'preprocess': 'federated',
    'FeatureSpec': 'tfrecord',
    'load_tfrecord': 'tfrecord',
    'write_tfrecord': 'tfrecord_writer',
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports.lazy_exports(__name__, _EXPORTS)
