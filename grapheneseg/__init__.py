"""grapheneseg core: the vocabulary every stage shares and nothing stage-specific.

`config` (Hydra composition, CLI helpers and errors, run outputs), `micrographs` (labelled real
folders), `formats` (microscope files through RosettaSciIO), `preprocessing` (the paper's flat
field and standardisation), `spectrum` (the Hann-windowed power spectrum), `lattice` (pixel size
and reflections from the graphene lattice), `metrics` (confusion counts, pooled and per-image
scores), `stats` (bootstrap intervals over images), `margins` (masks grown or shrunk, the margin
chosen by CV), `splits` (cross-validation folds shared by every arm), `fetch` (the public set). Imports run one way: grapheneseg <- simulate <-
train <- evaluate.
"""

__version__ = "0.1.0"

GRAPHENE_D100 = 2.13  # A, spacing of graphene's {100} lattice planes (a sqrt(3) / 2, a = 2.46 A)
