"""Benchmarking on labelled real micrographs: the Bragg-filter baseline (`bragg`), the comparison
of every arm on identical folds (`comparison`, `evaluate report`), the trained arms and their
content keys (`arms`), its tables and statistics (`report`), the active-labelling simulation
(`active`) and the uncertainty-vs-error study."""
