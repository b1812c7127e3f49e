"""How deep the pruning guide must run: on the demo model, the adapted configuration's retention (against the
dense variant, same test tasks) with visual tokens ranked by the embedder's first k layers, all of its layers,
or at random, at keep 0.5 and 0.25; and, at the first keep with the shipped guide, the opt-in
``instruction_in_prefix`` (the fixed instruction moved into the cached prefix, not adapted to).

    python scripts/guide_depth.py --queries 100 --json docs/bench/guide_depth.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# A sibling script: `python scripts/guide_depth.py` puts scripts/ first on the import path.
from demo_results import test_tasks

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.demo_model import demo_checkpoint
from minirerank_integrations.quality.data import FAMILIES
from minirerank_integrations.quality.evaluation import OVERALL, evaluate, retention


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100, help="test-split queries per family")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4], help="guide depths besides all")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    tasks = test_tasks(FAMILIES, args.queries, 0)
    dense = MiniReranker.from_pretrained(demo_checkpoint("dense"), config="dense")
    adapted = MiniReranker.from_pretrained(demo_checkpoint("paper"), embedder=dense.backbone)
    base = evaluate(dense, tasks)
    rows = []
    guides: list[tuple[str, int | None]] = [("embedder", k) for k in args.layers] + [
        ("embedder", None),
        ("random", None),
    ]
    shipped = (adapted.config.pruning_guide, adapted.config.pruning_guide_layers)
    runs = [(keep, guide, layers, False) for keep in args.keep for guide, layers in guides]
    runs.append((args.keep[0], *shipped, True))
    for keep, guide, layers, instruction_in_prefix in runs:
        update = {"keep_ratio": keep, "pruning_guide": guide, "pruning_guide_layers": layers}
        config = adapted.config.model_copy(update={**update, "instruction_in_prefix": instruction_in_prefix})
        engine = MiniReranker(adapted.backbone, RerankConfig(**config.model_dump()), embedder=adapted.embedder)
        report = evaluate(engine, tasks)
        kept = retention(report, base)
        row = {
            "keep": keep,
            "guide": guide,
            "guide_layers": "all" if guide == "embedder" and layers is None else layers,
            "instruction_in_prefix": instruction_in_prefix,
            "hit@1": {g: report.metrics[g]["hit_rate@1"] for g in [*FAMILIES, OVERALL]},
            "retention_hit@1": {g: kept[g]["hit_rate@1"] for g in [*FAMILIES, OVERALL]},
            "retention_ndcg@5": {g: kept[g]["ndcg@5"] for g in [*FAMILIES, OVERALL]},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {
        "queries_per_family": args.queries,
        "dense_hit@1": {g: base.metrics[g]["hit_rate@1"] for g in [*FAMILIES, OVERALL]},
        "adapted_config": adapted.config.model_dump(include={"exit_layer", "band"}),
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
