"""The Python API: compile a model, open an artifact or checkpoint, encode / decode, generate, evaluate.

    import egru_compile as ec
    art = ec.compile("examples/ptb-egru-small/model.pt", "onnx", "model.onnx")   # -> Artifact
    art = ec.load("model.onnx")              # artifact folder, IR file, checkpoint, or a gru/lstm baseline
    ids = art.encode("the company said")     # numpy int64 token ids (<eos> at each line break)
    art.decode(ids)                          # 'the company said'
    art.generate("The company said", 20, temperature=0.8, top_k=40, seed=0)   # str (prompt + 20 words)
    r = art.evaluate("ptb.test.txt", max_tokens=2000)   # a file, or the text itself; -> EvalResult
    r.perplexity, r.tokens, r.unknown_words, r.macs_per_token, r.activity, r.chip
    art.reset(); logits = art.step(ids[0])   # the runner's streaming API (step, run, score, get_state, ...)
    try: ec.load("nope")
    except ec.EgruError as e: print(e)       # the one-line message the CLI prints as `error: ...`

The command line goes through these functions (`compile_request`, `Artifact.evaluate`,
`Artifact.generate_result`, `inspect`), so the CLI and the API give the same figures.

Modules: `eval_result` (`EvalResult`), `artifact_handle` (`Artifact`, `load`, `evaluate_path`), `compiling`
(`compile`, `compile_request`), `inspecting` (`inspect`); every name is importable from `egru_compile.api`.
"""
from .artifact_handle import Artifact, evaluate_path, load
from .compiling import compile, compile_request
from .eval_result import EvalResult
from .inspecting import inspect

__all__ = ["Artifact", "EvalResult", "compile", "compile_request", "evaluate_path", "inspect", "load"]
