"""The Bragg baseline, reports comparing every arm, and applying models to new micrographs."""
