"""Data sets (embedded and torchvision formats) and federated partitioning."""

from bench.data.base import Dataset, ImageDataset
from bench.data.partition import ClientSplit, split_clients

__all__ = ["ClientSplit", "Dataset", "ImageDataset", "split_clients"]
