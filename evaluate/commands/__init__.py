"""What each `evaluate` subcommand does, apart from its flags (evaluate.cli): `apply` (predict, sort,
suggest, atoms, structure) and `benchmark` (bragg, bragg-fit, score, report, fetch-real)."""
