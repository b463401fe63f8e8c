"""Partial-sum fan-in splitting (graded-spike profiles): a layer whose units' fan-in exceeds a core's input
axons is split by *source range*. Its presynaptic sources (the layer input, then its own units: ``n_in + h``
sources, the order of `network.LayerNet` and `capacity.fan_in`) are cut into P contiguous ranges
(``bounds``); unit j's synapses from range p sit on core ``part_core[j, p]``. Part 0 is the unit's *home*
core (``core_of``): it receives the partial gate sums of the other parts, adds them and runs the cell
update. Each other part accumulates the partial sums of the unit's three gates over the events it received
in a token and, if it received any, sends them to the home core as **one graded message** carrying
``compartments_per_unit`` payloads (`psum_bits`). At the home core a partial sum arrives on an input axon
of its own and is added into the unit's ``compartments_per_unit`` accumulators (one synaptic op each,
counted as ``psum_adds``, charged as synops). A remote part's accumulators are compartments too: they
update every token, charged like a unit's: ``neuron_active`` in a token the part sends its partial sum,
``neuron_inactive`` otherwise — as SANA-FE charges every neuron every step, and a spike's generation.

`SplitLayer` is the data model (stored in program.npz by `program`, carried by `model.CoreMap.splits`;
`estimate.estimate_split` is its compile-time estimate);
`split_layer` is the placer of one layer (in-order fill of every part under the core limits); `synapse_reach`
and `split_synops` are the split-aware versions of `network.dest_cores` and the simulator's per-core synops.
Binary-spike profiles never split (their spikes cannot carry a partial sum): `capacity.check_fan_in` names the
binding limit instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .capacity import core_fits, fan_in, fill_sequential
from .model import PlacementError
from .network import LayerNet, group_sum
from .profile import ChipProfile


@dataclass
class SplitLayer:
    bounds: np.ndarray           # [P + 1] source-range bounds over the n_in + h sources (0 ... n_in + h)
    part_core: np.ndarray        # [h, P] core of unit j's synapses from range p; -1: no synapse there; [:, 0] = home

    @property
    def parts(self) -> int:
        return len(self.bounds) - 1

    def part_of(self, sources: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.bounds, sources, side="right") - 1


def psum_bits(profile: ChipProfile) -> int:
    """Payload of one partial-sum message: one ``payload_bits`` value per gate accumulator."""
    return profile.core.compartments_per_unit * profile.spikes.payload_bits


def needs_split(net: LayerNet, profile: ChipProfile) -> bool:
    f = fan_in(net)
    return bool(len(f) and f.max() > profile.core.input_axons)


def source_bounds(n_src: int, axons: int, home_units: int = 1) -> np.ndarray:
    """P contiguous ranges of at most ``axons - (P - 1) * home_units`` sources each: a home core keeps one
    input axon per remote part of each of its units, so `home_units` units fit on one home core."""
    for P in range(1, n_src + 1):
        size = axons - (P - 1) * home_units
        if size < 1:
            break
        if P * size >= n_src:
            return np.minimum(np.arange(P + 1) * size, n_src).astype(np.int64)
    raise PlacementError(f"a core's {axons} input axons cannot hold a split of {n_src} sources with "
                         f"{home_units} unit(s) per home core")


def split_layer(net: LayerNet, profile: ChipProfile, first_core: int, out_guess=None,
                bounds=None) -> tuple[np.ndarray, SplitLayer, int]:
    """(home core of each unit, its `SplitLayer`, cores used) with this layer's cores numbered from
    `first_core`. The trade: wider ranges mean fewer parts (fewer partial-sum messages) but fewer units per
    home core (each remote part takes an input axon there) and, near the axon limit, few units per part core
    (their fan-in unions fill the axons). Candidates: ranges as wide as the axons allow for 1, 2, 4, ...
    units per home core (`source_bounds`), and P = P_min ... P_min + 5 equal ranges (`equal_bounds`; ranges
    well below the axon limit leave memory, not axons, binding). Of those the fewest parts whose core count
    is within `SPLIT_CORE_SLACK` of the fewest wins (then the fewest cores). `out_guess` [h]: output axons
    each unit's spikes need at home (`_fill_parts`); `bounds`: this source split only."""
    pres = np.concatenate([net.conn_in, net.conn_rec], axis=1)              # [h, n_src] int8 synapses (0..3)
    axons, n_src = profile.core.input_axons, pres.shape[1]
    if bounds is not None:
        return _fill_parts(net, profile, pres, np.asarray(bounds), first_core, out_guess)
    cands, seen = [], set()
    r = 1
    while r <= min(profile.units_per_core, 128):
        try:
            cands.append(source_bounds(n_src, axons, r))
        except PlacementError:
            break
        r *= 2
    p_min = -(-n_src // axons)
    cands += [b for P in range(max(2, p_min), max(2, p_min) + 6) if (b := equal_bounds(n_src, P, axons)) is not None]
    results = []
    for bounds in cands:
        if 0 < net.n_in < bounds[1]:
            # the home range holds layer inputs only: its units' own spikes then never target their home
            # cores, whose count (set by the output axons of the spikes they send) would feed back on itself
            bounds = np.insert(bounds, 1, net.n_in)
            if int(np.diff(bounds).max()) + len(bounds) - 2 > axons:
                continue
        if tuple(bounds) in seen:
            continue
        seen.add(tuple(bounds))
        results.append(_fill_parts(net, profile, pres, bounds, first_core, out_guess))
    if not results:
        raise PlacementError(f"layer {net.index} cannot be split: a core's {axons} input axons "
                             f"cannot hold one range of its {n_src} sources and the partial sums")
    fewest = min(k for _, _, k in results)
    return min((x for x in results if x[2] <= fewest * (1 + SPLIT_CORE_SLACK)),
               key=lambda x: (x[1].parts, x[2]))


#: a split with fewer parts (fewer partial-sum messages) is kept when it needs at most this much more cores
SPLIT_CORE_SLACK = 0.05


def equal_bounds(n_src: int, parts: int, axons: int) -> np.ndarray | None:
    """`parts` contiguous ranges of (nearly) equal width over `n_src` sources, or None when one unit's home
    core could not hold its range plus one axon per remote part."""
    if parts > n_src:
        return None
    bounds = np.rint(np.linspace(0, n_src, parts + 1)).astype(np.int64)
    if int(np.diff(bounds).max()) + parts - 1 > axons:
        return None
    return bounds


def _fill_parts(net, profile, pres, bounds, first_core, out_guess=None):
    """Every part filled in unit order onto cores of its own (compartments: one accumulator per gate on every
    part; memory: the part's synapses and input axons, plus at home one axon pointer and
    ``compartments_per_unit`` adder synapses per remote part; input axons: the distinct sources in the
    range, plus at home one per remote part; output axons: at home `out_guess` [h] per unit (the cores its
    spikes reach; None: not limited), on a remote part one per unit, its partial sum's home)."""
    mem, cpu = profile.memory, profile.core.compartments_per_unit
    P = len(bounds) - 1
    part_syn = np.stack([pres[:, bounds[p]:bounds[p + 1]].sum(1) for p in range(P)], 1)   # [h, P]
    remote = (part_syn[:, 1:] > 0).sum(1)                                                 # [h] partials home gets
    part_core = -np.ones((net.hidden, P), np.int64)
    core = first_core
    for p in range(P):
        block = pres[:, bounds[p]:bounds[p + 1]] > 0
        started = False
        for j in range(net.hidden):
            if p and not part_syn[j, p]:
                continue                         # no synapse of unit j in this range: no part
            extra = int(remote[j]) if p == 0 else 0
            o_j = (float(out_guess[j]) if out_guess is not None else 0.0) if p == 0 else 1.0
            add_bits = int(part_syn[j, p]) * mem.synapse_bits + mem.state_bits_per_unit + \
                extra * (mem.axon_pointer_bits + cpu * mem.synapse_bits)
            if started:
                ranged = int(np.count_nonzero(mask | block[j]))
                if not core_fits(profile, (units + 1) * cpu, (bits + add_bits + ranged * mem.axon_pointer_bits) / 8.0,
                                 ranged + extras + extra, outs + o_j):
                    core += 1
                    started = False
            if not started:
                units, bits, extras, mask, started = 0, 0, 0, np.zeros(block.shape[1], bool), True
                outs = 0.0
            mask |= block[j]
            outs += o_j
            units += 1
            bits += add_bits
            extras += extra
            part_core[j, p] = core
        if started:
            core += 1
    return part_core[:, 0].copy(), SplitLayer(bounds, part_core), core - first_core


def synapse_reach(fan: np.ndarray, offset: int, core_of: np.ndarray, split: SplitLayer | None,
                  n_cores: int) -> np.ndarray:
    """[n_src, n_cores] bool: source i (`fan` [h, n_src] synapse counts of the target layer's units from
    these sources, which are the target layer's sources ``offset ...``) has a synapse on core c."""
    reach = np.zeros((fan.shape[1], n_cores), bool)
    if split is None:
        ids, pres = group_sum(fan > 0, np.asarray(core_of, np.int64), n_cores, bool, compact=True)
        reach[:, ids] |= pres.T
        return reach
    part = split.part_of(offset + np.arange(fan.shape[1]))
    for p in np.unique(part):
        cols = np.nonzero(part == p)[0]
        pc = split.part_core[:, p]
        has = pc >= 0
        if has.any():
            ids, pres = group_sum(fan[has][:, cols] > 0, pc[has], n_cores, bool, compact=True)
            reach[np.ix_(cols, ids)] |= pres.T
    return reach


def split_synops(fan_in_T: np.ndarray, fan_rec_T: np.ndarray, a_in: np.ndarray | None, a_rec: np.ndarray,
                 split: SplitLayer, n_cores: int) -> tuple[np.ndarray, np.ndarray]:
    """(synops per core [n_cores], synops per unit and part [h, P]) of one token: `fan_*_T` [n_src, h]
    synapse counts per source, `a_in` the active layer inputs (None: all, the dense embedding), `a_rec` the
    active recurrent sources."""
    n_in = fan_in_T.shape[0]
    act = np.zeros(n_in + fan_rec_T.shape[0], bool)
    act[:n_in] = True if a_in is None else False
    if a_in is not None:
        act[a_in] = True
    act[n_in + np.asarray(a_rec, np.int64)] = True
    per = np.zeros((fan_in_T.shape[1], split.parts), np.int64)
    for p in range(split.parts):
        lo, hi = split.bounds[p], split.bounds[p + 1]
        i_lo, i_hi = min(lo, n_in), min(hi, n_in)                  # the input sources of the range
        r_lo, r_hi = max(lo, n_in), max(hi, n_in)                  # its recurrent sources (offset n_in)
        per[:, p] = fan_in_T[i_lo:i_hi][act[i_lo:i_hi]].sum(0, dtype=np.int64) + \
            fan_rec_T[r_lo - n_in:r_hi - n_in][act[r_lo:r_hi]].sum(0, dtype=np.int64)
    pc = split.part_core
    ok = pc >= 0
    return np.bincount(pc[ok], weights=per[ok], minlength=n_cores).astype(np.int64), per


def split_core_map(nets: list[LayerNet], profile: ChipProfile, rounds: int = 5, only=None, keep=None):
    """A layer-by-layer in-order placement (`model.CoreMap`, slots in core order), each layer on cores of
    its own. Per layer: split (`split_layer`) when some unit's fan-in exceeds a core's input axons, or when
    the split needs fewer cores than the sequential fill (the trade: fewer cores, more messages); else the
    sequential baseline's fill. Output axons (the cores a unit's spikes reach, which the other layers' fills
    decide) are refined as `placement.sequential_placement` does: filled again with each unit's reach of
    the previous round until no core exceeds the limit (at most `rounds` rounds; the source ranges stay).
    `only`: the layers that may split when no unit of theirs needs it (None: every layer; `split_choice`);
    `keep`: per layer a unit -> core grouping (the baseline's) that an unsplit layer keeps instead of a fill.
    Graded-spike profiles only: a binary profile refuses an over-limit fan-in as `capacity.check_fan_in` does."""
    from .capacity import check_fan_in
    from .model import CoreMap
    if not profile.spikes.graded:
        check_fan_in(nets, profile)
    guess = [None] * len(nets)
    chosen = [None if only is None or l in only or needs_split(net, profile) else False for l, net in enumerate(nets)]
    for _ in range(rounds):
        core_of, splits, n = [], [], 0
        for l, net in enumerate(nets):
            split = None
            if profile.spikes.graded and (chosen[l] is None or chosen[l] is not False):
                split = split_layer(net, profile, n, guess[l], chosen[l])
            if chosen[l] is False and keep is not None and keep[l] is not None:
                co, k = np.unique(keep[l], return_inverse=True)[1], len(np.unique(keep[l]))
                split = (co + n, None, k)
            elif chosen[l] is None and not needs_split(net, profile) or chosen[l] is False:
                g = 1.0 if guess[l] is None else float(np.max(guess[l], initial=1.0))
                (co,), k = fill_sequential([net], profile, [g])
                if split is None or k <= split[2]:
                    split = (co + n, None, k)
            home, sp, k = split
            chosen[l] = False if sp is None else sp.bounds
            core_of.append(home)
            splits.append(sp)
            n += k
        reach = split_dest_cores([(x.conn_in, x.conn_rec) for x in nets], core_of, splits, n)
        guess = [r.sum(1).astype(np.float64) for r in reach]
        out = sum(np.bincount(core_of[l], weights=guess[l], minlength=n) for l in range(len(nets)))
        for sp in splits:
            if sp is not None:
                pc = sp.part_core[:, 1:]
                out += np.bincount(pc[pc >= 0], minlength=n)
        if not (out > profile.core.output_axons).any():
            break
    return CoreMap(core_of, np.arange(n), n, None, splits if any(s is not None for s in splits) else None)


def split_dest_cores(fans, core_of, splits, n_cores: int, dec_fan=None, dec_core_of=None) -> list[np.ndarray]:
    """`network.dest_cores` with split layers' synapses on their part cores (`synapse_reach`)."""
    L, out = len(fans), []
    for l in range(L):
        r = synapse_reach(fans[l][1], fans[l][0].shape[1], core_of[l], splits[l], n_cores)
        if l + 1 < L:
            r |= synapse_reach(fans[l + 1][0], 0, core_of[l + 1], splits[l + 1], n_cores)
        elif dec_fan is not None:
            r |= synapse_reach(dec_fan, 0, dec_core_of, None, n_cores)
        out.append(r)
    return out


def psum_routes(sp: SplitLayer, home: np.ndarray, slot_of_core: np.ndarray, cost) -> dict:
    """Per (unit, remote part) [h, P-1]: the partial-sum message's sender and receiver core, hops, pJ
    (delivery included), link ns, the injection ns per message, and a run counter (`costs.CostModel.route`
    with the `psum_bits` payload)."""
    pc = sp.part_core[:, 1:]
    bits = psum_bits(cost.profile)
    dst = np.broadcast_to(np.asarray(home)[:, None], pc.shape)
    src_slot, dst_slot = slot_of_core[np.maximum(pc, 0)], slot_of_core[dst]
    hops, pj, _ = cost.route(src_slot, dst_slot, bits)
    link_ns = cost.route(src_slot, dst_slot, bits, delivery=False)[2]
    return {"src": pc, "dst": dst, "has": pc >= 0, "hops": hops.astype(np.int64), "pj": pj,
            "inject_ns": cost.message(bits)[1], "link_ns": link_ns, "count": np.zeros(pc.shape, np.int64)}


def psum_link_loads(ps: dict, tiles: np.ndarray, mesh, loads: np.ndarray) -> None:
    """loads[link] += the partial-sum messages counted in ``ps["count"]``, each on its X-then-Y route."""
    sent = ps["count"] > 0
    st, dt = tiles[np.maximum(ps["src"], 0)], tiles[ps["dst"]]
    for s in np.unique(st[sent]):
        sel = sent & (st == s)
        grid = np.zeros((mesh.width, mesh.height))
        x, y = mesh.tile_xy(dt[sel])
        np.add.at(grid, (x, y), ps["count"][sel])
        mesh.add_unicast_loads(loads, int(s), grid)


def crowded(pl) -> bool:
    """Does some layer of placement `pl` hold fewer than 2 units per core on average (its units' fan-in
    unions exceed the input axons: the case where a split can need fewer cores)?"""
    return any(len(co) > 1 and 2 * len(np.unique(co)) > len(co) for co in pl.core_of)


def interleaved_slots(cm) -> np.ndarray:
    """Slots (in core order) that put every split layer's part cores next to the home cores of the units they
    serve: within a layer the cores are ordered by the mean home position of their units' (home core rank,
    then part), so consecutive slots (a tile, then its neighbours) hold one group of units' home and parts.
    Unsplit layers keep their order; layers follow each other."""
    n = cm.n_cores
    key = np.arange(n, dtype=np.float64)
    for co, sp in zip(cm.core_of, cm.splits or [None] * len(cm.core_of)):
        if sp is None:
            continue
        home = np.asarray(co)
        cores = np.unique(sp.part_core[sp.part_core >= 0])
        lo, hi = int(cores.min()), int(cores.max()) + 1
        pos = np.zeros(n)
        cnt = np.zeros(n)
        for p in range(sp.parts):
            pc = sp.part_core[:, p]
            ok = pc >= 0
            pos += np.bincount(pc[ok], weights=home[ok].astype(np.float64), minlength=n)
            cnt += np.bincount(pc[ok], minlength=n)
        mean = pos[lo:hi] / np.maximum(cnt[lo:hi], 1)
        part = np.zeros(hi - lo)
        for p in range(sp.parts):                          # a part core's part index breaks ties: home first
            pc = sp.part_core[:, p]
            part[np.unique(pc[pc >= 0]) - lo] = p
        order = np.lexsort((part, mean))
        key[lo:hi] = lo + np.argsort(order, kind="stable")
    slots = np.empty(n, np.int64)
    slots[np.argsort(key, kind="stable")] = np.arange(n)
    return slots


def split_info(pl, profile: ChipProfile) -> dict | None:
    """mapping.json ``split``: per split layer its source ranges, the cores holding each range (range 0: the
    units' home cores) and their count, and the partial-sum payload (None when no layer is split)."""
    if not getattr(pl, "splits", None):
        return None
    layers = []
    for l, sp in enumerate(pl.splits):
        if sp is None:
            continue
        pcs = [np.unique(sp.part_core[:, p][sp.part_core[:, p] >= 0]) for p in range(sp.parts)]
        layers.append({"layer": l, "source_ranges": [[int(a), int(b)] for a, b in zip(sp.bounds[:-1], sp.bounds[1:])],
                       "cores_per_range": [int(len(c)) for c in pcs],
                       "cores_of_range": [[int(k) for k in c] for c in pcs],
                       "remote_parts": int((sp.part_core[:, 1:] >= 0).sum())})
    return {"why": f"a unit's fan-in exceeds the {profile.core.input_axons} input axons of a core: its synapses are "
                   "split by source range, each remote range sends one graded partial-sum message per token "
                   "with events to the unit's home core", "psum_payload_bits": psum_bits(profile), "layers": layers}


def split_lines(info: dict | None) -> str:
    """The report's lines on the split (empty when none)."""
    if not info:
        return ""
    parts = "; ".join(f"layer {x['layer']}: {len(x['source_ranges'])} source ranges on "
                      f"{'+'.join(str(c) for c in x['cores_per_range'])} cores" for x in info["layers"])
    return (f"fan-in split (partial sums, {info['psum_payload_bits']}-bit graded messages): {parts}\n")
