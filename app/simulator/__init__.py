"""`syncgov simulate`: a seeded warehouse event stream with its own ground truth."""

from app.simulator.generate import Simulation
from app.simulator.model import Faults, Incidents, Model, SimConfig, preset

__all__ = ["Faults", "Incidents", "Model", "SimConfig", "Simulation", "preset"]
