"""Datasets for FedDST: local-file readers, seeded partitions, TFF ClientData."""

from tff_feddst.data.federated import (
    EMNIST_FILENAME,
    PARTITIONS,
    FederatedData,
    build_federated_data,
    first_clients,
    load_emnist,
    preprocess,
)
from tff_feddst.data.partition import (
    Partition,
    PartitionSummary,
    dirichlet_partition,
    iid_partition,
    k_class_partition,
)
from tff_feddst.data.sources import (
    DATASET_NAMES,
    DEBIAN_FASHION_MNIST_DIR,
    CentralizedData,
    CorruptDatasetError,
    DatasetNotFoundError,
    load,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    make_synthetic,
    read_idx,
)
from tff_feddst.data.tfrecord import (
    FeatureSpec,
    load_tfrecord,
    write_tfrecord,
)

__all__ = [
    'CentralizedData',
    'CorruptDatasetError',
    'DATASET_NAMES',
    'DEBIAN_FASHION_MNIST_DIR',
    'DatasetNotFoundError',
    'EMNIST_FILENAME',
    'FeatureSpec',
    'FederatedData',
    'PARTITIONS',
    'Partition',
    'PartitionSummary',
    'build_federated_data',
    'first_clients',
    'dirichlet_partition',
    'iid_partition',
    'k_class_partition',
    'load',
    'load_cifar10',
    'load_cifar100',
    'load_digits',
    'load_emnist',
    'load_fashion_mnist',
    'load_mnist',
    'load_tfrecord',
    'make_synthetic',
    'preprocess',
    'read_idx',
    'write_tfrecord',
]
