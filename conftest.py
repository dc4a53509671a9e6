"""pytest's collection rules for the whole repository (the unit tests' own settings are in tests/conftest.py).

notebooks/exercises/ holds the exercise notebooks that scripts/make_exercises.py generates from the teaching
notebooks. Their stubs raise NotImplementedError by design, so nbval must not run them; tests/test_exercises.py
checks instead that they are up to date with the teaching notebooks, which nbval does run.
"""

collect_ignore_glob = ["notebooks/exercises/*"]
