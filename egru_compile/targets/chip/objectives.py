"""The table of placement objectives: one entry per objective, read by the placer (`placement.place`) and by
the target registry (the choices, default and help of ``--placement-objective``). Adding an objective is
adding a row here. Nothing heavy is imported: listing targets stays cheap."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    name: str
    help: str
    partitioner: str          # `partition.partition_layer` method used for this objective's ``auto``
    spare_cores: bool         # the spare cores of the occupied chips go to the bottleneck layer
    tighten: bool             # each layer gives up cores while its partition still fits
    compete_baseline: bool    # the baseline's own assignment, laid out, competes (fewer packets, then fewer
                              # spike-hops, then the lower busiest core wins)
    never_worse: bool = False  # the chosen placement is no worse than the sequential baseline on packets,
                               # spike-hops and latency (candidates that lose one are dropped; the baseline
                               # itself is always a candidate)
    balance: bool = False      # after partitioning, units move off each layer's busiest core (compute and
                               # message-send time) while that lowers the layer's slowest core; kept when the
                               # estimated latency drops (`placement.balance_latency`)


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("traffic", "fewest spike hops within the baseline's cores, never worse than the baseline on "
              "messages, hops or latency", partitioner="rate", spare_cores=False, tighten=True,
              compete_baseline=True, never_worse=True),
    Objective("latency", "use spare cores to cut the busiest core's load, then balance each layer's cores",
              partitioner="auto", spare_cores=True,
              tighten=False, compete_baseline=False, balance=True),
)}
DEFAULT_OBJECTIVE = "traffic"
OBJECTIVE_HELP = ", or ".join(f"{o.help} ({o.name})" for o in OBJECTIVES.values())
