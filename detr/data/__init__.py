"""The data pipeline: COCO-format datasets, the paper's augmentations, padded batching, deterministic sampling."""

from detr.data.check import check_dataset
from detr.data.classes import resolve_num_classes
from detr.data.coco import CocoDetection, build_dataset
from detr.data.collate import collate_batch, padding_fraction
from detr.data.layout import Layout, find_layout
from detr.data.render import synthetic_categories
from detr.data.root import cache_dir, dataset_root
from detr.data.sampler import DeterministicBatchSampler, aspect_ratio_group_ids
from detr.data.shapes import resized_size, worst_case_batch_shape
from detr.data.synthetic import generate_synthetic_coco

__all__ = [
    "CocoDetection",
    "DeterministicBatchSampler",
    "Layout",
    "aspect_ratio_group_ids",
    "build_dataset",
    "cache_dir",
    "check_dataset",
    "collate_batch",
    "dataset_root",
    "find_layout",
    "generate_synthetic_coco",
    "padding_fraction",
    "resized_size",
    "resolve_num_classes",
    "synthetic_categories",
    "worst_case_batch_shape",
]
