"""Auto-labelled synthetic HRTEM micrographs of graphene with abTEM.

Modules, in the order an image is made: `structures` (polycrystalline graphene, holes, adatoms as
ASE Atoms, with the amorphous carbon of `amorphous`), `imaging` (abTEM exit wave once per
structure, then cheap CTF, dose and detector variants), `labels` (contamination mask and class map from the atoms), `pipeline`
((seed, index) -> labelled image), `dataset` (HDF5 file), `driver` (local processes or
dask.distributed), `report` (preview, inspect, sim-vs-real compare), `cli` (the `simulate` command).
"""
