"""Experiment grids: many ordinary training runs and evaluations, one results table, paired tests.

``spec`` reads the experiment YAML (format: docs/experiments.md), ``plan`` lists its runs, ``run``
trains and evaluates them, ``tables`` writes the results.
"""
