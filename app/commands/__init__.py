"""The operator commands behind `syncgov` (``app/cli.py``): the worker, the ERP release
connector, replay, export, dead letters, trace."""
