"""`EvalResult`: what `Artifact.evaluate` measured, and its JSON form (`egru-compile eval --json`)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class EvalResult:
    """What `Artifact.evaluate` measured (`runtime.evaluate` protocol: zero state, state carried through the
    text, T tokens give T-1 predictions). ``unknown_words``: words of the text not in the vocabulary (mapped to
    the ``unk`` token; ``<eos>`` not counted), ``unknown_share`` their share of ``words``; ``case_folded``:
    words found only after folding to lower case; ``unk_in_text``: words the text itself writes as the
    unknown-word token (``<unk>`` in PTB's preprocessed text: 4,794 words, 6.09 % of its test set, as `eval`
    prints). ``chip``: the simulator's per-token figures (chip artifacts, else None). ``extra``: the remaining
    fields of the JSON form (``streams`` for batch_size > 1, ...). ``tokens`` counts predictions (T - 1)."""

    target: str
    tokens: int
    perplexity: float
    cross_entropy: float
    words: int
    unknown_words: int
    unknown_share: float
    case_folded: int
    unk_in_text: int
    activity: list[float]
    events_per_token: list[float]
    macs_per_token: float
    tokens_per_second: float | None
    seconds: float
    batch_size: int
    layer_sizes: list[int]
    artifact: str | None = None
    data: str | None = None
    chip: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: d.get(k) for k in names}, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict:
        """The JSON object `egru-compile eval --json` prints."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        if d["chip"] is None:
            del d["chip"]
        return d | self.extra
