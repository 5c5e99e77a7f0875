"""Coverage-guided fuzzing of every parser that reads peer or user input (atheris).

``python -m fuzz --list`` names the targets; ``python -m fuzz TARGET [libFuzzer flags]``
runs one; ``python -m fuzz --all --seconds 5`` runs each briefly (CI).  Targets live in
``fuzz/targets.py``; their seed corpora come from ``tests/vectors`` and small examples.
"""
