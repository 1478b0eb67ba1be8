"""Data: readers, source adapters, pre-processing, cache, splits, augmentation, datasets."""
