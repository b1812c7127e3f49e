"""The text summary of a benchmark result: every row, then the targets of the engine's speed, checked."""

from __future__ import annotations


def _row(result: dict, **match: object) -> dict | None:
    for row in result["rows"]:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def targets(result: dict) -> list[dict]:
    """Each target: what it asks, the measured value and whether it holds (None: not measured in this run)."""
    sizes = sorted({r["image_size"] for r in result["rows"] if r["workload"] == "text->image"})
    n = max(result["settings"]["warm_n"])
    out = []
    for size, limit in ((1024, 0.005), (512, 0.007)):
        warm = _row(result, workload="text->image", image_size=size, method="paper", state="warm", n=n)
        value = warm["ratio_to_dense_official"] if warm else None
        out.append(_target(f"warm paper, {size}x{size}, N={n}: <= {limit:.1%} of dense-official", value, limit))
    big = max(sizes) if sizes else None
    ingest = _row(result, workload="text->image", image_size=big, method="paper", state="ingest")
    value = ingest["ratio_to_dense_official"] if ingest else None
    stage = next((s for s in result.get("ingestion_stages", []) if s["image_size"] == big), None)
    floor = (
        f" (floor: the vision encoder alone is {stage['vision_vs_dense_pair']:.3f} of a pair)"
        if stage and "vision_vs_dense_pair" in stage
        else ""
    )
    out.append(_target(f"ingestion per document, {big}x{big}: <= 25% of a dense-official pair{floor}", value, 0.25))
    for size in sizes:
        cold = next(
            (
                r
                for r in result["rows"]
                if (r["image_size"], r["method"], r["state"], r["composed"]) == (size, "paper", "cold", None)
            ),
            None,
        )
        batched = _row(result, workload="text->image", image_size=size, method="dense-batched")
        value = cold["seconds_per_pair"] / batched["seconds_per_pair"] if cold and batched else None
        out.append(_target(f"cold paper query, {size}x{size}: <= dense-batched (per pair)", value, 1.0))
        if ingest := _row(result, workload="text->image", image_size=size, method="paper", state="ingest"):
            value = ingest["stored_bytes_per_doc"] / ingest["band_read_bytes_per_doc"]
            out.append(
                _target(
                    f"stored bytes per document, {size}x{size}: <= what the band reads (+ <= 2% codec header) "
                    f"({ingest['stored_vs_full_kv']:.3f} of full KV; int8 "
                    f"{ingest['stored_bytes_per_doc_int8'] / ingest['full_kv_bytes_per_doc']:.3f})",
                    value,
                    1.02,  # the codec's header and safetensors metadata
                )
            )
    return out


def _target(name: str, value: float | None, limit: float) -> dict:
    return {"target": name, "value": value, "limit": limit, "holds": None if value is None else value <= limit}


def summary(result: dict) -> str:
    shape, machine = result["shape"], result["machine"]
    lines = [
        f"shape {shape['name']}: {shape['layers']} layers, hidden {shape['hidden']}, {shape['heads']} heads, "
        f"{shape['kv_heads']} KV heads; vision depth {shape['vision_depth']}; random weights (speed does not "
        "depend on weight values)",
        f"machine: {machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']}, cuda {machine['cuda']}",
        f"paper: {result['paper_config']}, guide layers {result['guide_layers_default']}; query "
        f"{result['query_tokens']} tokens ({result.get('vocabulary', 'workload')} vocabulary)",
        "",
        f"{'workload':<12} {'size':>5} {'method':<30} {'state':<7} {'N':>5} {'s/query':>10} {'s/pair':>9} "
        f"{'vs dense':>9} {'suffix':>6} {'RSS GiB':>7}",
    ]
    for r in result["rows"]:
        ratio = r["ratio_to_dense_official"]
        per_query = r["seconds_per_query"]
        lines.append(
            f"{r['workload']:<12} {r['image_size']:>5} {r['method']:<30} {r['state']:<7} {r['n']:>5} "
            f"{per_query if per_query is not None else float('nan'):>10.3f} {r['seconds_per_pair']:>9.4f} "
            f"{ratio if ratio is not None else float('nan'):>9.4f} {r['suffix_tokens'] or '':>6} "
            f"{(r['peak_rss_bytes'] or 0) / 2**30:>7.2f}"
            + (" scaled" if r["scaled"] else "")
            + (" composed" if r["composed"] else "")
        )
    lines += ["", "targets:"]
    for t in targets(result):
        value = "not measured" if t["value"] is None else f"{t['value']:.4f}"
        verdict = {True: "holds", False: "MISSED", None: "-"}[t["holds"]]
        lines.append(f"  {t['target']}: {value} ({verdict})")
    lines += ["", "notes:", *(f"  {n}" for n in result["notes"])]
    return "\n".join(lines)
