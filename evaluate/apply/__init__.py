"""Applying trained models to micrographs: segmentation (`segment`), atoms and bonds (`atoms`),
sorting, which to label next (`suggest`), uncertainty maps and out-of-distribution flags (`ood`).
Imports nothing from evaluate.benchmark."""
