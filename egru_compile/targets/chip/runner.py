"""Runner for chip artifacts: `egru-compile eval DIR` streams tokens through the event simulator of the placed
program (weights as the chip holds them, spikes routed over the mesh of the artifact's profile), reporting
activity, the synaptic ops of the RNN cores as MACs/token, and every per-core / per-link counter through
`extra_report()` (the "chip" object of `eval --json`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...artifact import ArtifactError
from ...runner import Runner, StepStats, read_vocab_file
from .profile import ProfileError, load_profile, parse_profile
from .program import load_program
from .report import simulated_report
from .simulate import ChipSimulator


class ChipRunner(Runner):
    def __init__(self, path: Path, manifest: dict, backend: str | None = None):
        super().__init__()
        import io

        from ...artifact import read_verified
        from ...fsio import FileError
        # each file read once and checked against the sealed manifest, then used from those bytes
        program, program_bytes = read_verified(path, manifest, "program", "program.npz")
        try:
            stack, cores = load_program(io.BytesIO(program_bytes))
        except FileError as e:
            raise ArtifactError(str(e).replace("program.npz", str(program), 1)) from None
        except (OSError, ValueError, KeyError) as e:
            raise ArtifactError(f"{program} is unreadable: {e}") from None
        mapping, mapping_bytes = read_verified(path, manifest, "mapping", "mapping.json")
        self.assumptions = None
        try:
            whole = json.loads(mapping_bytes)
            recorded = whole["profile"]
            self.assumptions = whole.get("assumptions") if isinstance(whole, dict) else None
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            recorded = None
        if isinstance(recorded, dict):       # checked like a --profile file (a resealed one may hold anything)
            data = {k: v for k, v in recorded.items() if k != "source"}
            try:
                profile = parse_profile(data, f"{mapping} profile", str(recorded.get("name", "")))
            except ProfileError as e:
                raise ArtifactError(str(e)) from None
        else:
            profile = load_profile(manifest.get("profile") or manifest["target"])
        self.target = manifest["target"]
        self.path = str(path)
        self.layer_sizes = stack.hidden_sizes
        self.vocab_size = stack.vocab_size
        self.decoder = manifest.get("decoder") or ("chip" if cores.decoder_core_of is not None else "host")
        if manifest.get("vocab"):
            self.vocab = read_vocab_file(*read_verified(path, manifest, "vocab"))
        self.sim = ChipSimulator(stack, cores, backend=backend, profile=profile,
                                 multicast=manifest.get("router") == "multicast")

    @classmethod
    def from_artifact(cls, path, manifest, **options):
        return cls(Path(path), manifest, backend=options.get("backend"))

    def reset(self) -> None:
        self.sim.reset()

    #: a core program's state buffers (its units' c and y, and y's event list)
    _PROG_STATE = ("c", "y", "oi", "ov", "on")

    def get_state(self):
        """The simulator's recurrent state: c, y per layer, each core's pending spike inboxes and its program's
        state buffers (the counters are not state: they keep accumulating over everything stepped)."""
        sim = self.sim
        return {"c": [a.copy() for a in sim.c], "y": [a.copy() for a in sim.y],
                "cores": [(list(core.inbox_in), list(core.inbox_rec),
                           None if core.prog is None else {k: core.prog.v[k].copy() for k in self._PROG_STATE})
                          for core in sim.cores]}

    def set_state(self, state) -> None:
        sim = self.sim
        sim.c = [a.copy() for a in state["c"]]
        sim.y = [a.copy() for a in state["y"]]
        for core, (inbox_in, inbox_rec, prog) in zip(sim.cores, state["cores"]):
            core.inbox_in[:] = inbox_in
            core.inbox_rec[:] = inbox_rec
            if prog is not None:
                for k, a in prog.items():
                    core.prog.v[k][...] = a

    def step(self, token: int) -> np.ndarray:
        logits = self.sim.step(self.check_token(token))
        self.last_stats = StepStats(tuple(int(a) for a in self.sim.last_active), int(self.sim.last_synops))
        return logits

    def extra_report(self) -> dict:
        """{"chip": per-token averages of the simulator's counters since the last reset}."""
        return {"chip": simulated_report(self.sim, self.decoder, self.assumptions)}
