"""egru-compile: compile pruned event-based GRU language models into sparse, event-driven programs
(ONNX, Apache TVM native code, simulated neuromorphic chips).

    import egru_compile as ec
    art = ec.compile("examples/ptb-egru-small/model.pt", "onnx", "model.onnx")
    art = ec.load("model.onnx")                    # artifact folder, IR file or checkpoint
    ids = art.encode("the company said")           # token ids;  art.decode(ids) -> "the company said"
    print(art.generate("The company said", 20, temperature=0.8, top_k=40, seed=0))
    r = art.evaluate("data/ptb/ptb.test.txt", max_tokens=2000)  # -> EvalResult
    print(r.perplexity, r.tokens, r.unknown_words, r.macs_per_token, r.activity)
    art.reset(); logits = art.step(ids[0])         # streaming: step / run / score / get_state / streams
    try: ec.load("missing")
    except ec.EgruError as e: print("error:", e)   # one line, naming keywords (max_chips=), not flags

`compile`, `load`, `Artifact`, `EvalResult` and `inspect` live in `egru_compile.api` (imported on first use:
``import egru_compile`` stays cheap).
"""
from .errors import EgruError

__all__ = ["EgruError", "compile", "load", "inspect", "Artifact", "EvalResult"]


def __getattr__(name):
    if name in ("compile", "load", "inspect", "Artifact", "EvalResult"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'egru_compile' has no attribute {name!r}")
