"""One Python API to run any compiled artifact (or a source checkpoint) token by token.

    from egru_compile.runtime import open_artifact, evaluate, load_eval_tokens
    r = open_artifact("model.onnx.d")          # dir: runner chosen by manifest.json "target"; file: TorchRunner
    r.reset()
    logits = r.step(token_id)                  # [V] float32; r.last_stats = StepStats(events, macs)
    logits = r.run(token_ids)                  # [T, V]; r.last_run = RunStats(events [T,L], macs [T])
    ids = load_eval_tokens("test.txt", r.vocab, max_tokens=None, unk=None)
    evaluate(r, ids, quiet=True)               # {"perplexity", "tokens", "macs_per_token", "activity",
                                               #  "tokens_per_second", ...}
    evaluate(r, ids, batch_size=4)             # 4 contiguous streams; "streams": each one's own figures
    s = r.get_state(); r.set_state(s)          # exact snapshot / restore of the recurrent state
    r.reset_streams(4)                         # 4 independent streams (native or one saved state each)
    logits = r.step_streams([3, 1, 4, 1])      # [4, V]; r.last_stream_stats = StreamStats(events [4,L], macs [4])
    nll = r.score_streams(tok_TB, tgt_TB)      # [T, 4]; r.last_run = RunStats(events [T,4,L], macs [T,4])
    from egru_compile.runtime.generate import generate
    generate(r, prompt_ids, 20, temperature=0.8, top_k=40, seed=0)   # token ids after the prompt

The runner interface (`Runner`, its statistics, `NllScorer`) is `egru_compile.runner`, under the targets that implement it;
the targets' runners come from the target registry (`targets.registry`, imported on first use); runners without a target
register theirs with `register_runner(target, factory)`.
"""
from ..artifact import ArtifactError, read_manifest
from ..runner import NllScorer, Runner, RunStats, StepStats, StreamStats, read_vocab_file
from .open import open_artifact, register_runner
from .evaluate import evaluate, graph_perplexity, load_eval_tokens
from .torch_runner import GraphRunner, TorchRunner


def __getattr__(name):        # OnnxRunner imports onnxruntime only when asked for
    if name in ("OnnxRunner", "session_options"):
        from ..targets.onnx import runner
        return getattr(runner, name)
    raise AttributeError(name)


__all__ = ["ArtifactError", "Runner", "RunStats", "StepStats", "StreamStats", "open_artifact", "read_manifest", "read_vocab_file",
           "register_runner", "NllScorer", "evaluate", "graph_perplexity", "load_eval_tokens", "GraphRunner", "TorchRunner",
           "OnnxRunner", "session_options"]
