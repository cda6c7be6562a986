"""Runs: an attack run (privacy, :mod:`bench.runs.attack`) and a training run (utility,
:mod:`bench.runs.train`), sharing one preparation of their components (:mod:`bench.runs.common`)."""
