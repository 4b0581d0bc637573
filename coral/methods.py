"""The methods coral trains, in one registry: their names, order and colours.

A method's name is its key in config.yaml (`methods`), its objective in coral.objectives (which a
test holds to this list) and its row label in every table. The order here is the order of table rows
and figure legends. To add a method: its objective class in coral.objectives, a line here, and its
hyperparameters under `objectives` in config.yaml and the schema.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    colour: str         # in every figure
    in_paper: bool      # one of the four methods the CORAL paper compares (not an ablation's variant)


METHODS = (
    Method("ddpm", "#7f7f7f", True),            # gray: the baseline
    Method("cbdm", "#1f77b4", True),            # blue
    Method("t2h", "#2ca02c", True),             # green
    Method("coral", "#d62728", True),           # red
    Method("coral_ambient", "#ff7f0e", False),  # orange: the latent-vs-ambient ablation of CORAL
)
NAMES = tuple(method.name for method in METHODS)
PAPER_METHODS = tuple(method.name for method in METHODS if method.in_paper)
COLOURS = {method.name: method.colour for method in METHODS}
