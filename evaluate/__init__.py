"""grapheneseg.evaluate: real data, preprocessing, metrics, the Bragg baseline and reports."""

__version__ = "0.1.0"
