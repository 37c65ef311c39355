"""Harnesses around the product, not in its runtime image (``.dockerignore``): the demo,
worker child processes for the demo, tests and benchmarks, the chaos run."""
