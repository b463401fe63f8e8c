"""Chip profiles: capacity, mesh geometry and per-event energy/time of a many-core neuromorphic chip.

Profiles are TOML files (``profiles/<name>.toml``, every number with its public source in a comment); users
pass their own with ``--profile FILE``. Loading establishes that every value is physically meaningful before
any placement or report uses it: energies and times are finite and >= 0, counts and limits are positive
integers within bounds an array can hold, mesh dimensions are ≥ 1, bit widths lie in their sane range, every
section and key is known and of the right type (no bool for an int, no string for a number). Anything else is
a one-line `ProfileError` naming the file and the key.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import EgruError

PROFILE_DIR = Path(__file__).parent / "profiles"


class ProfileError(EgruError):
    pass


@dataclass(frozen=True)
class ChipGeometry:
    cores: int
    tiles_x: int
    tiles_y: int
    cores_per_tile: int
    chip_hop_pj: float
    chip_hop_ns: float
    multicast: bool = False          # the router replicates a packet along a tree (one per spike, not per core)


@dataclass(frozen=True)
class CoreLimits:
    compartments: int
    input_axons: int
    output_axons: int
    synapse_memory_bytes: int
    compartments_per_unit: int


@dataclass(frozen=True)
class MemoryModel:
    weight_bits: int
    index_bits: int
    axon_pointer_bits: int
    state_bits_per_unit: int

    @property
    def synapse_bits(self) -> int:
        return self.weight_bits + self.index_bits


@dataclass(frozen=True)
class EnergyModel:
    synop_pj: float
    synop_ns: float
    neuron_active_pj: float
    neuron_active_ns: float
    neuron_inactive_pj: float
    neuron_inactive_ns: float
    spike_tile_pj: float
    spike_tile_ns: float
    hop_ew_pj: float
    hop_ew_ns: float
    hop_ns_pj: float
    hop_ns_ns: float
    barrier_ns: float


@dataclass(frozen=True)
class SpikeModel:
    """What one spike message carries. ``payload_bits`` = 0: a binary spike (Loihi 1: the receiving synapse
    adds its weight); > 0: a graded spike carrying an integer payload of that many bits (Loihi 2), which is
    how an EGRU unit's event value reaches its targets without extra messages.

    ``flit_bits``: payload bits one flit of a message carries. A message is its header flit (all a binary
    spike is) plus ``ceil(payload_bits / flit_bits)`` payload flits, and every flit costs what the header
    does (`costs.CostModel.flits`). 0 (the default): the payload rides in the header, a graded spike costs
    what a binary one does."""
    payload_bits: int = 0
    flit_bits: int = 0

    @property
    def graded(self) -> bool:
        return self.payload_bits > 0

    def flits(self, payload_bits: int | None = None) -> int:
        """Flits of one message carrying `payload_bits` (None: one spike of this profile)."""
        bits = self.payload_bits if payload_bits is None else int(payload_bits)
        return 1 + (-(-bits // self.flit_bits) if bits > 0 and self.flit_bits > 0 else 0)


@dataclass(frozen=True)
class ChipProfile:
    name: str
    description: str
    chip: ChipGeometry
    core: CoreLimits
    memory: MemoryModel
    energy: EnergyModel
    source: str
    spikes: SpikeModel = SpikeModel()

    @property
    def units_per_core(self) -> int:
        return self.core.compartments // self.core.compartments_per_unit

    def to_dict(self) -> dict:
        """The profile as mapping.json records it; ``source`` without the machine's own folders (a built-in
        profile as its path inside the package, a user's file by its name) so that an artifact copied to
        another machine or shared with a lab says the same thing."""
        d = asdict(self)
        d["source"] = portable_source(self.source)
        return d


def portable_source(source: str) -> str:
    """``egru_compile/targets/chip/profiles/NAME.toml`` for a built-in profile file, the bare file name for
    any other file, `source` unchanged when it is not a file path (a label such as a mapping's)."""
    p = Path(source)
    try:
        if p.is_file() and p.resolve().parent == PROFILE_DIR.resolve():
            return f"egru_compile/targets/chip/profiles/{p.name}"
        return p.name if p.is_file() else source
    except OSError:
        return source


# ----------------------------------------------------------------------------------------------- schema
_INT_MAX = 2 ** 40          # every count must fit the int64 arrays placement builds (and products of them)
_F = ("float", 0.0, 1e12)   # energy (pJ) or time (ns) per event: finite, >= 0 (1e12 pJ = 1 J per event)

#: most tiles a profile's mesh may have: routing and the mesh model allocate per tile (and per link) before
#: anything is placed, so the mesh size is bounded before any of it is allocated (real chips: 32-40 tiles)
MAX_TILES = 1 << 14
#: largest profile file read (a real one is ~3 KB): ``--profile /dev/zero`` is refused after 1 MiB
PROFILE_FILE_LIMIT = 1 << 20

#: section -> (dataclass, required, {key: (kind, lowest, highest)})
SCHEMA: dict[str, tuple[type, bool, dict[str, tuple[str, float, float]]]] = {
    "chip": (ChipGeometry, True, {
        "cores": ("int", 1, 1 << 20), "tiles_x": ("int", 1, 1 << 12), "tiles_y": ("int", 1, 1 << 12),
        "cores_per_tile": ("int", 1, 1 << 12), "chip_hop_pj": _F, "chip_hop_ns": _F,
        "multicast": ("bool?", 0, 1)}),
    "core": (CoreLimits, True, {
        "compartments": ("int", 1, 1 << 31), "input_axons": ("int", 1, 1 << 31),
        "output_axons": ("int", 1, 1 << 31), "synapse_memory_bytes": ("int", 1, _INT_MAX),
        "compartments_per_unit": ("int", 1, 64)}),
    "memory": (MemoryModel, True, {
        "weight_bits": ("int", 1, 32), "index_bits": ("int", 1, 64), "axon_pointer_bits": ("int", 1, 64),
        "state_bits_per_unit": ("int", 0, 1 << 16)}),
    "energy": (EnergyModel, True, {k: _F for k in EnergyModel.__dataclass_fields__}),
    "spikes": (SpikeModel, False, {"payload_bits": ("int", 0, 64), "flit_bits": ("int?", 0, 1024)}),
}
TOP_LEVEL_STRINGS = ("name", "description")


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _value(v, kind: str, lo: float, hi: float, err) -> int | float | bool:
    if kind == "bool?":
        if not isinstance(v, bool):
            err(f"= {_short(v)} must be true or false")
        return v
    if kind in ("int", "int?"):
        if isinstance(v, bool) or not isinstance(v, int):
            err(f"= {_short(v)} must be an integer")
        if not lo <= v <= hi:
            err(f"= {v} must be {'>= 0' if lo == 0 else 'a positive integer'}" + (f" <= {int(hi):,}" if v > hi else ""))
        return int(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        err(f"= {_short(v)} must be a number")
    if not math.isfinite(v):
        err(f"= {v} must be finite")
    if not lo <= v <= hi:
        err(f"= {v} must be >= 0" + (f" and <= {hi:g}" if v > hi else ""))
    return float(v)


def _section(data: dict, key: str, where: str):
    cls, required, keys = SCHEMA[key]
    if key not in data:
        if required:
            raise ProfileError(f"chip profile {where}: missing section [{key}]")
        return cls()
    sec = data[key]
    if not isinstance(sec, dict):
        raise ProfileError(f"chip profile {where}: {key} must be a section [{key}], not a value")
    for k in sec:
        if k not in keys:
            raise ProfileError(f"chip profile {where}: [{key}] has unknown key {k!r} "
                               f"(known: {', '.join(keys)})")
    kwargs = {}
    for k, (kind, lo, hi) in keys.items():
        if k not in sec:
            if kind.endswith("?"):             # optional key: the dataclass default
                continue
            raise ProfileError(f"chip profile {where}: [{key}] lacks '{k}'")

        def err(msg, k=k):
            raise ProfileError(f"chip profile {where}: [{key}] {k} {msg}")
        kwargs[k] = _value(sec[k], kind, lo, hi, err)
    return cls(**kwargs)


def parse_profile(data: dict, where: str, default_name: str = "") -> ChipProfile:
    """A validated `ChipProfile` from parsed TOML `data`; `where` names the file in errors."""
    for k, v in data.items():
        if k in TOP_LEVEL_STRINGS:
            if not isinstance(v, str) or "\n" in v or not (v.strip() or k == "description"):
                raise ProfileError(f"chip profile {where}: {k} must be a one-line string")
        elif k not in SCHEMA:
            raise ProfileError(f"chip profile {where}: unknown key {k!r} (known: "
                               f"{', '.join(TOP_LEVEL_STRINGS + tuple(SCHEMA))})")
    chip = _section(data, "chip", where)
    if chip.tiles_x * chip.tiles_y > MAX_TILES:
        raise ProfileError(f"chip profile {where}: [chip] a {chip.tiles_x}x{chip.tiles_y} mesh has more than "
                           f"{MAX_TILES:,} tiles (the mesh is simulated tile by tile)")
    if chip.tiles_x * chip.tiles_y * chip.cores_per_tile < chip.cores:
        raise ProfileError(f"chip profile {where}: [chip] cores = {chip.cores} does not fit {chip.tiles_x}x"
                           f"{chip.tiles_y} tiles of {chip.cores_per_tile} cores")
    core = _section(data, "core", where)
    if core.compartments < core.compartments_per_unit:
        raise ProfileError(f"chip profile {where}: [core] compartments = {core.compartments} cannot hold one "
                           f"EGRU unit (compartments_per_unit = {core.compartments_per_unit})")
    return ChipProfile(data.get("name", default_name), data.get("description", ""), chip, core,
                       _section(data, "memory", where), _section(data, "energy", where), where,
                       _section(data, "spikes", where))


def load_profile(name_or_path: str) -> ChipProfile:
    """Load a built-in profile by name (``loihi-like``) or a TOML file path."""
    path = Path(name_or_path)
    if not path.suffix and len(path.parts) == 1:           # a bare name: a bundled profile
        path = PROFILE_DIR / f"{name_or_path}.toml"
    where = str(path)
    from ...fsio import FileError, read_bounded
    try:
        data = tomllib.loads(read_bounded(path, PROFILE_FILE_LIMIT, "chip profile").decode("utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"chip profile {where}: no such file") from None
    except FileError as e:
        raise ProfileError(str(e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"chip profile {where}: unreadable ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"chip profile {where}: malformed TOML ({e})") from None
    return parse_profile(data, where, path.stem)
