"""Training data: datasets over crop and clip shards, epoch sampling, augmentations and batch-level mixes.

Kept import-free so that the datasets do not pull in albumentations.
"""
