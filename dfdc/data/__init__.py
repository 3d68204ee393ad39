"""Training data: augmentations (:mod:`dfdc.data.augment`) and crop datasets (:mod:`dfdc.data.dataset`).

Kept import-free so that ``dfdc.data.dataset`` does not pull in albumentations.
"""
