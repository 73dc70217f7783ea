"""Datasets: offline TFDS builders and the input pipeline."""
from genjax.data.pipeline import Dataset, DatasetError, DatasetInfo, get_builder
