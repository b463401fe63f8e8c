"""Neuromorphic targets `loihi-like` and `spinnaker2-like`: core placement, per-core synapse blocks, a spiking
simulator and mapping reports (MACs, spikes, traffic and energy per core).

Output directory::

    manifest.json    target, profile, I/O, source checksum
    mapping.json     placement, per-core estimated costs and the simulation of the calibration text
                     (schema in report.py)
    report.txt       the text report printed at compile time (estimated beside simulated)
    mapping.png      mesh heat-map of synops per core with link loads and chip boundaries (mapping_png)
    mapping.html     the same mesh, interactive and self-contained (mapping_html)
    program.npz      per-core weights as the chip holds them + placement (what `eval` simulates)
    vocab.txt        vocabulary (when the source has one)

``options["decoder"]``: "host" (default) or "chip" (see `decoder`).

Built like a mapper (compare SpiNNaker's PACMAN): a data model — `network` (units and their synapses),
`profile` (the machine), `model` (core map, placement with its objective and estimate) — apart from one-file
algorithms behind one interface each: `partition` (units of a layer -> k cores), `placement` (the placers,
`place`), `layout` (cores -> mesh slots), `routing` (messages over the mesh); one cost model (`costs`) that
the estimate (`estimate`), layout, routing, simulator (`simulate`) and reports charge through; capacity
checks in `capacity`; the objectives in one table (`objectives`); the program codec in `program`; the
pipeline in `pipeline.compile_chip`.
"""
from __future__ import annotations

import importlib

#: public name -> module; loaded on first use, so that the target registry reading `objectives` (the
#: ``--placement-objective`` choices) does not import the back-end
_EXPORTS = {"compile_chip": "pipeline", "measure_unit_activity": "pipeline", "load_program": "program",
            "save_program": "program", "load_profile": "profile", "ChipProfile": "profile",
            "ProfileError": "profile", "PlacementError": "model"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
