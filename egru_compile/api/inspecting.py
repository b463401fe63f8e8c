"""`inspect`: the text and JSON description of an artifact folder (manifest, chip mapping rows) or of a source /
baseline checkpoint (weight shapes and densities), as `egru-compile inspect` prints it."""
from __future__ import annotations

from pathlib import Path

from ..errors import EgruError, api_spelling, option


@api_spelling()
def inspect(path, *, core: int | None = None, links: bool = False, trust: bool = False,
            projection_activation: str | None = None) -> tuple[str, dict]:
    """(text, JSON object) describing an artifact folder (its manifest; ``core`` / ``links``: chip details)
    or a source / baseline checkpoint (shapes and densities of its weights): what `egru-compile inspect`
    prints, without and with ``--json``."""
    p = Path(path)
    if p.is_dir():
        from ..artifact import read_manifest
        from ..targets.registry import for_manifest
        info = read_manifest(p)
        from ..runtime.open import artifact_projection_activation
        act = artifact_projection_activation(info)
        if projection_activation is not None and act is not None and projection_activation != act:
            raise EgruError(f"{path} was compiled with projection activation {act}, not {projection_activation}")
        if act is not None:
            info = dict(info, projection_activation=act)
        if for_manifest(info) is None:
            raise EgruError(f"{path}: no target of this installation opens {info['target']!r} artifacts "
                            f"(format {info.get('format')!r})")
        from ..targets.describe import describe_artifact
        text = describe_artifact(p, info, core=core, links=links)
        data = {"path": str(p), "kind": "artifact", "manifest": {k: v for k, v in info.items() if k != "files"},
                "files": sorted(info.get("files", {}))}
        if core is not None or links:
            data["mapping"] = _mapping_json(p, info, core, links)
        return text, data
    if core is not None or links:
        what = option("core") if core is not None else option("links")
        raise EgruError(f"{what} shows a chip artifact's cores; {path} is not an artifact folder (compile it for "
                        f"a chip target first)")
    from ..frontend import load_source
    from ..frontend.checkpoint import BaselineCheckpointError
    try:
        src = load_source(path, trust=trust, projection_activation=projection_activation)
    except BaselineCheckpointError as e:
        from ..runtime.baseline_runner import BaselineRunner
        r = BaselineRunner.from_file(path)
        cfg = r.model.config
        lines = [f"source        {cfg.cell}-baseline (dense; evaluates, does not compile)",
                 f"vocab_size    {cfg.vocab_size}" + ("" if r.vocab else " (no vocabulary stored)"),
                 f"embedding     {cfg.embedding_size}", f"hidden_sizes  {list(cfg.hidden_sizes)}",
                 f"MACs/token    {r.macs} (dense {cfg.cell.upper()} layers)"]
        return "\n".join(lines) + "\n", {"path": str(p), "kind": f"{e.cell}-baseline", "vocab_size": cfg.vocab_size,
                                         "embedding": cfg.embedding_size, "layers": list(cfg.hidden_sizes),
                                         "macs_per_token": r.macs}
    lines = [f"source        {src.kind}", f"sha256        {src.sha256}"]
    data: dict = {"path": str(p), "kind": src.kind, "sha256": src.sha256}
    if src.model is not None:
        cfg = src.model.config
        lines += [f"vocab_size    {cfg.vocab_size}" + ("" if src.vocab else " (no vocabulary stored)"),
                  f"embedding     {cfg.embedding_size}", f"hidden_sizes  {list(cfg.hidden_sizes)}"]
        data |= {"vocab_size": cfg.vocab_size, "has_vocab": src.vocab is not None, "embedding": cfg.embedding_size,
                 "layers": list(cfg.hidden_sizes), "weights": {}}
        # one shape convention in every view (ir.sparse.SHAPE_CONVENTION: out x in, as the compiled IR and
        # the onnx/tvm weight tables); EvNN's kernels are stored [in, out], i.e. transposed
        from ..ir.sparse import SHAPE_CONVENTION, fmt_matrix_shape
        lines.append(f"shapes        {SHAPE_CONVENTION}; the checkpoint stores the kernels transposed (EvNN [in, out])")
        data["shape_convention"] = SHAPE_CONVENTION
        for i, layer in enumerate(src.model.rnns):
            for name in ("kernel", "recurrent_kernel"):
                w = getattr(layer, name)
                nnz = int((w != 0).sum())
                n_in, n_out = w.shape
                lines.append(f"rnns.{i}.{name:<17} {fmt_matrix_shape(n_out, n_in):<9}  density {nnz / w.numel():.4f}")
                data["weights"][f"rnns.{i}.{name}"] = {"shape": [int(n_out), int(n_in)], "density": nnz / w.numel()}
        proj = getattr(src.model.decoder, "projection", None)
        if proj is not None:           # EvNN's projection decoder (an nn.Linear: its weight is already [out, in])
            from ..model import projection_line
            nnz = int((proj.weight != 0).sum())
            inner = "relu(P · y + p)" if cfg.projection_activation == "relu" else "(P · y + p)"
            lines.append(f"decoder       E · {inner} + b (tied E), P {fmt_matrix_shape(*proj.weight.shape)}  "
                         f"density {nnz / proj.weight.numel():.4f}")
            lines.append(f"projection    {projection_line(cfg.projection_activation)}")
            data["decoder"] = {"kind": "projection", "shape": [int(s) for s in proj.weight.shape],
                               "density": nnz / proj.weight.numel(), "activation": cfg.projection_activation}
        else:
            lines.append("decoder       E · y + b (tied to the embedding)")
            data["decoder"] = {"kind": "tied"}
    else:
        lines.append(f"hidden_sizes  {list(src.hidden_sizes)}")
        data["layers"] = list(src.hidden_sizes)
    return "\n".join(lines) + "\n", data


def _mapping_json(path: Path, manifest: dict, core: int | None, links: bool) -> dict | None:
    """`inspect --json --core N / --links`: the core's rows of the artifact's mapping.json (``core``, and
    ``simulated`` from the compile's simulation when there was one) and the simulated links (None when the
    artifact has no mapping)."""
    import json
    f = path / "mapping.json"
    if not f.is_file():
        return None
    m = json.loads(f.read_text(encoding="utf-8"))
    out: dict = {}
    if core is not None:
        rows = [c for c in list(m.get("cores") or []) + list((m.get("decoder") or {}).get("cores") or [])
                if isinstance(c, dict) and c.get("core") == core]
        out["core"] = rows[0] if rows else None
        sim = (m.get("simulated") or {}).get("cores")
        out["simulated"] = sim[core] if isinstance(sim, list) and 0 <= core < len(sim) else None
    if links:
        out["links"] = (m.get("simulated") or {}).get("links")
    return out
