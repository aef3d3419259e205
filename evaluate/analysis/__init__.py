"""Analysis of a micrograph beyond its contamination, as array-to-result functions: the lattice
orientation and grains (orientation), the honeycomb's registration (registration) and the ring
census of an atom graph (rings). No file is read or written here."""
