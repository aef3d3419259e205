"""The paper's four classes of a graphene micrograph, as the simulator's class maps number them
(HDF5 `classes`), the four-class network predicts them and `evaluate structure` writes them."""

LATTICE, CONTAMINATION, VACUUM, BOUNDARY = 0, 1, 2, 3
CLASS_NAMES = ("lattice", "contamination", "vacuum", "grain_boundary")
