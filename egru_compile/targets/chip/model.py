"""Data model of a chip mapping (with `network.LayerNet`, the network, and `profile.ChipProfile`, the
machine): where units sit (`CoreMap`, what a chip program holds), a placement with the objective it was
made for and its estimated costs (`Placement`), the per-core estimate (`CoreCosts`), and the one error a
placement that does not fit raises. The algorithms (partition, placement, layout, routing) produce and read
these; nothing here computes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import EgruError


class PlacementError(EgruError):
    pass


@dataclass
class CoreMap:
    """Where every unit sits, as a chip program stores it: the unit -> core map per layer, the physical slot
    of every core (RNN cores first, then the decoder's when it is on chip) and each decoder output's core."""
    core_of: list[np.ndarray]            # per layer: [h] logical core of each unit
    slot_of_core: np.ndarray             # [cores] physical slot of each logical core
    n_cores: int                         # RNN cores (the first n_cores entries of slot_of_core)
    decoder_core_of: np.ndarray | None = None
    splits: list | None = None           # per layer: `split.SplitLayer` (fan-in split by source range) or None
    projection_core_of: np.ndarray | None = None   # [E] core of each projection output (graded, `projection`)


@dataclass
class CoreCosts:
    """Per logical core, per token (activity-weighted quantities use calibration rates when present)."""
    units: np.ndarray
    compartments: np.ndarray
    synapses: np.ndarray
    input_axons: np.ndarray
    output_axons: np.ndarray
    memory_bytes: np.ndarray
    macs_static: np.ndarray
    mac_events: np.ndarray | None      # integer MACs over all calibration tokens
    spikes_in: np.ndarray
    spikes_out: np.ndarray
    hops_out: np.ndarray               # spike-hops sent per token
    energy_pj: np.ndarray
    busy_ns: np.ndarray                # [layers, cores] work time of each core in each layer phase
    traffic: np.ndarray                # [cores, cores] spikes per token from core a to core b
    #: [layers] the simulator's latency model per layer phase (ns per token): the busiest core's work with one
    #: delivery per message it injects, plus the longest route (spikes, then partial sums), plus the barrier
    phase_ns: np.ndarray | None = None

    @property
    def packets(self) -> float:
        """Spike messages per token (one per spike and destination core)."""
        return float(self.spikes_out.sum())

    def core_macs(self, tokens: int = 0) -> np.ndarray:
        return self.mac_events / tokens if self.mac_events is not None and tokens else self.macs_static

    def balance(self, tokens: int = 0) -> tuple[float, float]:
        """(max, mean) MACs per core and token."""
        m = self.core_macs(tokens)
        return float(m.max()), float(m.mean())


@dataclass
class Placement:
    """A unit -> core assignment and its mesh layout. ``name``: which placer made it (``sequential``,
    ``balanced``); ``objective``: what it was made for (`objectives.OBJECTIVES`); ``costs``: its estimate,
    attached by the placer that evaluated it (None until then)."""
    name: str
    core_of: list[np.ndarray]            # per layer: [h] logical core of each unit
    slot_of_core: np.ndarray             # [n_cores] physical slot of each logical core
    n_cores: int
    chips: int
    objective: str = ""
    costs: CoreCosts | None = field(default=None, repr=False, compare=False)
    splits: list | None = None           # per layer: `split.SplitLayer` or None (fan-in split placements)
    layout: dict | None = field(default=None, repr=False, compare=False)   # `layout.layout`'s statistics

    def core_map(self, decoder=None) -> CoreMap:
        """What the chip program holds (with the decoder's cores and slots when it is placed on chip)."""
        if decoder is None:
            return CoreMap(self.core_of, self.slot_of_core, self.n_cores, None, self.splits)
        return CoreMap(self.core_of, decoder.slot_of_core, self.n_cores, decoder.core_of, self.splits,
                       decoder.proj_core_of)
