"""``minirerank eval``: ranking quality of configurations on task files or generated tasks, with retention
against the first configuration, the layer-wise analysis and the result files."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..demo_model import DEMO_MODEL
from ._common import EXIT_OK, Subparsers, fail

if TYPE_CHECKING:
    from ..engine.config import RerankConfig
    from ..quality.data import RerankTask
    from ..quality.evaluation import EvalReport


RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
EXIT_CURVE_PNG = "exit_curve.png"
ATTENTION_SHARE_PNG = "attention_share.png"


def add_commands(commands: Subparsers) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="evaluate configurations on reranking tasks (Hit@1, NDCG@5, MRR@10, runtime, retention)",
        description="Evaluate one or more configurations on the same reranking tasks: task directories in the "
        "JSONL format (--data) or synthetic tasks generated on the fly. Prints per-family Hit@1, NDCG@5 and "
        "MRR@10, runtime and retention against the first configuration.",
    )
    evaluate.add_argument(
        "--model",
        default=DEMO_MODEL,
        help=f"a Qwen3-VL checkpoint (folder or hub id); default: {DEMO_MODEL}, the embedded demo (its dense "
        "variant: every configuration is evaluated on the same weights)",
    )
    evaluate.add_argument(
        "--data",
        nargs="+",
        action="extend",
        default=[],
        metavar="DIR",
        help="task directories (tasks.jsonl + images/, see docs/data-format.md); default: generate tasks",
    )
    evaluate.add_argument(
        "--family",
        nargs="+",
        action="extend",
        default=[],
        metavar="F",
        help="task families to keep (with --data) or to generate; default: all",
    )
    evaluate.add_argument("--split", default="test", choices=["train", "validation", "test"], help="generated split")
    evaluate.add_argument(
        "--queries",
        type=int,
        default=None,
        metavar="N",
        help="queries per family: how many to generate (default 50), or with --data the first N of each family "
        "(default all)",
    )
    evaluate.add_argument("--candidates", type=int, default=20, metavar="N", help="candidates per generated query")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the generated tasks")
    evaluate.add_argument(
        "--configs",
        nargs="+",
        action="extend",
        default=None,
        metavar="CONFIG",
        help="presets (dense, paper, paper-narrow) or NAME=JSON for a custom RerankConfig, e.g. "
        '\'no-band={"format":"vision_first","band":[0,0]}\'; retention is against the first; '
        "default: dense paper",
    )
    evaluate.add_argument("--embedder", default=None, metavar="PATH", help="checkpoint that guides token pruning")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    evaluate.add_argument("--out", default=None, metavar="DIR", help=f"write {RESULTS_JSON} and {RESULTS_MD} here")
    evaluate.add_argument(
        "--layerwise",
        action="store_true",
        help="also compute the exit curve of the first configuration and the per-layer attention share "
        f"(printed; with --out also {EXIT_CURVE_PNG} and {ATTENTION_SHARE_PNG})",
    )
    evaluate.set_defaults(handler=_eval)


@dataclass(frozen=True)
class _ConfigResult:
    """One evaluated configuration: its ``--configs`` name, the resolved config, the report, and retention
    against the first configuration."""

    name: str
    config: RerankConfig
    report: EvalReport
    retention: dict[str, dict[str, float]]


def _eval(args: argparse.Namespace) -> int:
    from ..errors import MiniRerankError

    try:
        return _run_eval(args)
    except MiniRerankError as exc:  # a bad --configs value, family, data file, image or checkpoint
        return fail(exc)


def _run_eval(args: argparse.Namespace) -> int:
    from ..engine.reranker import MiniReranker
    from ..quality.evaluation import evaluate, retention

    specs = _parse_configs(args.configs or ["dense", "paper"])
    tasks = _eval_tasks(args)
    reranker = MiniReranker.from_pretrained(
        args.model, config="dense", device=args.device, dtype=args.dtype, embedder=args.embedder
    )
    configs = [(name, _resolve(name, spec, reranker.num_layers)) for name, spec in specs]  # all checked first

    results: list[_ConfigResult] = []
    for name, config in configs:
        print(f"evaluating {name} on {len(tasks)} queries ...", file=sys.stderr)
        reranker.config = config
        report = evaluate(reranker, tasks)
        baseline = results[0].report if results else report
        results.append(_ConfigResult(name, reranker.config, report, retention(report, baseline)))
    print(_plain_table(*_result_rows(results)))

    layerwise = None
    if args.layerwise:
        from ..quality.analysis import attention_share, exit_curve

        reranker.config = results[0].config
        print(f"layer-wise analysis of {results[0].name} ...", file=sys.stderr)
        layerwise = {
            "config": results[0].name,
            "exit_curve": exit_curve(reranker, tasks),
            "attention_share": attention_share(reranker, tasks),
        }
        print()
        print(_layerwise_text(layerwise))

    if args.out is not None:
        _write_results(args, results, layerwise)
    return EXIT_OK


def _parse_configs(values: list[str]) -> list[tuple[str, RerankConfig | str]]:
    """(name, preset name or RerankConfig) per ``--configs`` value; raises ConfigError on a bad one."""
    from pydantic import ValidationError

    from ..engine.config import RerankConfig
    from ..errors import ConfigError

    specs: list[tuple[str, RerankConfig | str]] = []
    for value in values:
        spec: RerankConfig | str
        if "=" in value:
            name, text = value.split("=", 1)  # the JSON may hold "=" itself
            try:
                spec = RerankConfig.model_validate_json(text)
            except (ValidationError, ValueError) as exc:
                raise ConfigError(f"--configs {value!r}: not a valid RerankConfig in JSON: {exc}") from exc
        elif value in ("dense", "paper", "paper-narrow"):
            name, spec = value, value
        else:
            raise ConfigError(
                f"--configs {value!r}: use a preset (dense, paper, paper-narrow) or NAME=JSON for a custom RerankConfig"
            )
        if not name:
            raise ConfigError(f"--configs {value!r}: give the configuration a name before '='")
        if name in (n for n, _ in specs):
            raise ConfigError(f"--configs: the name {name!r} is used twice; give each configuration its own name")
        specs.append((name, spec))
    return specs


def _resolve(name: str, spec: RerankConfig | str, depth: int) -> RerankConfig:
    """The configuration checked against a model of ``depth`` layers; the error names the configuration."""
    from ..engine.config import RerankConfig
    from ..errors import ConfigError

    try:
        if isinstance(spec, str):
            return RerankConfig.preset(spec, depth)  # type: ignore[arg-type]  # checked by _parse_configs
        return spec.resolve(depth)
    except ConfigError as exc:
        raise ConfigError(f"configuration {name!r}: {exc}") from exc


def _eval_tasks(args: argparse.Namespace) -> list[RerankTask]:
    """The tasks of ``--data`` (filtered by family, capped per family) or generated ones."""
    from ..errors import InputError
    from ..quality.data import FAMILIES, generate, load_tasks

    if args.queries is not None and args.queries < 1:
        raise InputError(f"--queries must be >= 1, got {args.queries}")
    if not args.data:
        n = 50 if args.queries is None else args.queries
        return [
            task
            for family in args.family or FAMILIES
            for task in generate(family, args.split, n, seed=args.seed, candidates_per_query=args.candidates)
        ]
    tasks = [task for directory in args.data for task in load_tasks(directory)]
    if args.family:
        tasks = [task for task in tasks if task.family in args.family]
    if args.queries is not None:
        kept: dict[str, int] = {}
        capped = []
        for task in tasks:
            kept[task.family] = kept.get(task.family, 0) + 1
            if kept[task.family] <= args.queries:
                capped.append(task)
        tasks = capped
    if not tasks:
        wanted = f" of families {args.family}" if args.family else ""
        raise InputError(f"no tasks{wanted} in {args.data}; check --data and --family")
    return tasks


def _result_rows(results: list[_ConfigResult]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per (configuration, family), the overall row of each configuration last."""
    from ..quality.evaluation import METRICS, OVERALL

    header = ["config", "family", "queries", *METRICS, "seconds", "pairs/s", *(f"retention {m}" for m in METRICS)]
    rows = []
    for result in results:
        report = result.report
        for family in [*sorted(k for k in report.metrics if k != OVERALL), OVERALL]:
            seconds = report.seconds[family] if report.seconds is not None else 0.0
            rows.append(
                [
                    result.name,
                    family,
                    str(report.queries[family]),
                    *(f"{report.metrics[family][m]:.4f}" for m in METRICS),
                    f"{seconds:.2f}",
                    f"{report.pairs[family] / seconds:.1f}" if seconds > 0 else "-",
                    *(_ratio(result.retention[family][m]) for m in METRICS),
                ]
            )
    return header, rows


def _ratio(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"  # nan: the baseline metric is 0


def _plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _layerwise_rows(layerwise: dict) -> tuple[tuple[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]:
    from ..quality.evaluation import METRICS, OVERALL

    curve, shares = layerwise["exit_curve"], layerwise["attention_share"]
    exit_rows = [[str(layer), *(f"{curve[layer][OVERALL][m]:.4f}" for m in METRICS)] for layer in sorted(curve)]
    share_rows = [[str(layer), f"{share:.4f}"] for layer, share in enumerate(shares)]
    return (["exit layer", *METRICS], exit_rows), (["layer", "suffix-to-prefix share"], share_rows)


def _layerwise_text(layerwise: dict) -> str:
    (exit_header, exit_rows), (share_header, share_rows) = _layerwise_rows(layerwise)
    return (
        f"exit curve of {layerwise['config']} (overall):\n{_plain_table(exit_header, exit_rows)}\n\n"
        "attention share (suffix tokens to prefix, vision-first, every layer attends everywhere):\n"
        f"{_plain_table(share_header, share_rows)}"
    )


def _write_results(args: argparse.Namespace, results: list[_ConfigResult], layerwise: dict | None) -> None:
    """``results.json`` (every number), ``results.md`` (the tables) and, with ``layerwise``, the two plots."""
    import json
    import math
    from pathlib import Path

    def finite(value):  # JSON has no NaN: an undefined retention (baseline metric 0) is written as null
        if isinstance(value, dict):
            return {str(k): finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return None if isinstance(value, float) and math.isnan(value) else value

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    baseline = results[0]
    source = (
        {"data": list(args.data)}
        if args.data
        else {"generated": {"split": args.split, "seed": args.seed, "candidates": args.candidates}}
    )
    document: dict = {
        "model": args.model,
        "embedder": args.embedder,
        "tasks": {
            "source": source,
            "queries": baseline.report.queries,
            "pairs": baseline.report.pairs,
            "digest": baseline.report.task_digest,
        },
        "baseline": baseline.name,
        "configs": [
            {
                "name": r.name,
                "config": r.config.model_dump(mode="json"),
                "metrics": r.report.metrics,
                "queries": r.report.queries,
                "pairs": r.report.pairs,
                "seconds": r.report.seconds,
                "pairs_per_second": r.report.pairs_per_second,
                "retention": r.retention,
            }
            for r in results
        ],
    }
    markdown = [f"# Evaluation of `{args.model}`", "", f"Retention is against `{baseline.name}`.", ""]
    markdown += [_markdown_table(*_result_rows(results)), ""]
    if layerwise is not None:
        from ..quality.analysis import plot_attention_share, plot_exit_curve

        name = layerwise["config"]
        plot_exit_curve(layerwise["exit_curve"], out / EXIT_CURVE_PNG, title=f"Ranking quality by exit layer ({name})")
        from ..engine.config import RerankConfig

        # Shaded for reference: where the paper preset places its band on a model of this depth.
        paper_band = RerankConfig.preset("paper", len(layerwise["attention_share"])).band
        plot_attention_share(
            layerwise["attention_share"],
            out / ATTENTION_SHARE_PNG,
            band=paper_band,
            band_label=f"paper preset band {paper_band}",
        )
        document["layerwise"] = layerwise
        exit_table, share_table = _layerwise_rows(layerwise)
        markdown += [f"## Exit curve of `{name}` (overall)", "", _markdown_table(*exit_table), ""]
        markdown += [f"![exit curve]({EXIT_CURVE_PNG})", ""]
        markdown += ["## Attention from suffix tokens to the prefix, by layer", "", _markdown_table(*share_table), ""]
        markdown += [f"![attention share]({ATTENTION_SHARE_PNG})", ""]
    (out / RESULTS_JSON).write_text(json.dumps(finite(document), indent=2) + "\n", encoding="utf-8")
    (out / RESULTS_MD).write_text("\n".join(markdown), encoding="utf-8")
    print(f"wrote {out / RESULTS_JSON} and {out / RESULTS_MD}", file=sys.stderr)
