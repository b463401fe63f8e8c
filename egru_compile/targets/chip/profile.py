"""Chip profiles: capacity, mesh geometry and per-event energy/time of a many-core neuromorphic chip.

Profiles are TOML files (``profiles/<name>.toml``, every number with its public source in a comment); users
pass their own with ``--profile FILE``. A malformed profile is a one-line `ProfileError`.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
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
class ChipProfile:
    name: str
    description: str
    chip: ChipGeometry
    core: CoreLimits
    memory: MemoryModel
    energy: EnergyModel
    source: str

    @property
    def units_per_core(self) -> int:
        return self.core.compartments // self.core.compartments_per_unit

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)


def _section(data: dict, key: str, cls, where: str):
    sec = data.get(key)
    if not isinstance(sec, dict):
        raise ProfileError(f"chip profile {where}: missing section [{key}]")
    kwargs = {}
    for f in fields(cls):
        if f.name not in sec:
            raise ProfileError(f"chip profile {where}: [{key}] lacks '{f.name}'")
        v = sec[f.name]
        want = int if f.type in ("int", int) else float
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and not isinstance(v, int)):
            raise ProfileError(f"chip profile {where}: [{key}] {f.name} must be a number ({want.__name__})")
        if v < 0 or (want is int and v == 0 and f.name not in ("state_bits_per_unit",)):
            raise ProfileError(f"chip profile {where}: [{key}] {f.name} must be positive")
        kwargs[f.name] = want(v)
    return cls(**kwargs)


def load_profile(name_or_path: str) -> ChipProfile:
    """Load a built-in profile by name (``loihi-like``) or a TOML file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.toml"
    where = str(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"chip profile {where}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"chip profile {where}: unreadable ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"chip profile {where}: malformed TOML ({e})") from None
    chip = _section(data, "chip", ChipGeometry, where)
    if chip.tiles_x * chip.tiles_y * chip.cores_per_tile < chip.cores:
        raise ProfileError(f"chip profile {where}: {chip.tiles_x}x{chip.tiles_y} tiles of {chip.cores_per_tile} "
                           f"cores cannot hold {chip.cores} cores")
    core = _section(data, "core", CoreLimits, where)
    if core.compartments < core.compartments_per_unit:
        raise ProfileError(f"chip profile {where}: a core cannot hold one EGRU unit")
    return ChipProfile(str(data.get("name", path.stem)), str(data.get("description", "")), chip, core,
                       _section(data, "memory", MemoryModel, where), _section(data, "energy", EnergyModel, where),
                       str(path))
