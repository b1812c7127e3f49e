"""``minirerank adapt`` and ``minirerank calibrate``: from a checkpoint to a fast configuration of measured
quality. ``adapt`` trains it by self-distillation from the checkpoint's own dense run (no labels needed);
``calibrate`` measures a grid of configurations against the dense run and writes the cheapest that keeps
the target retention."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from ._common import EXIT_OK, Subparsers, fail
from .flags import add_settings_flags, settings_from_flags

if TYPE_CHECKING:
    from ..engine.config import RerankConfig
    from ..quality.data import RerankTask
    from ..quality.settings import AdaptSettings


def add_commands(commands: Subparsers) -> None:
    adapt = commands.add_parser(
        "adapt",
        help="adapt a checkpoint to a fast configuration by self-distillation from its dense run (no labels)",
        description="Train a fast configuration (vision-first, early exit, band, pruning) of a Qwen3-VL reranker "
        "to reproduce the same checkpoint's dense scores and order on your (query, candidates) groups. LoRA "
        "(merged at the end) or full fine-tuning; teacher scores cached; resumable. See docs/adaptation.md.",
    )
    from ..engine.config import PresetName

    adapt.add_argument("--model", required=True, help="the checkpoint to adapt (folder or hub id)")
    _data_arguments(adapt)
    adapt.add_argument(
        "--config",
        default="paper",
        metavar="CONFIG",
        help=f"the fast configuration: a preset ({', '.join(get_args(PresetName))}), a minirerank_config.json "
        "file, or RerankConfig JSON (default: paper)",
    )
    adapt.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: empty, new, or an earlier run's (resumed); never the model folder or inside it",
    )
    adapt.add_argument("--overwrite", action="store_true", help="write into a non-empty --out all the same")
    _settings_arguments(adapt)
    adapt.add_argument("--stop-after", type=int, default=None, metavar="N", help="stop (resumable) after N steps")
    adapt.add_argument("--no-resume", action="store_true", help="ignore a saved state in --out")
    adapt.add_argument("--teacher-cache", default=None, metavar="FILE", help="default OUT/teacher_scores.safetensors")
    adapt.add_argument("--device", default="cpu", help="where to train, e.g. cpu, cuda (default: cpu)")
    adapt.set_defaults(handler=_adapt)

    calibrate = commands.add_parser(
        "calibrate",
        help="choose the cheapest configuration that keeps a target retention, and save it with the checkpoint",
        description="Evaluate a grid of configurations (exit layer, band, keep ratio, pruning guide) of a "
        "checkpoint on validation groups against the dense teacher (or the labels), time each on this device, "
        "and write the cheapest one keeping the target retention of Hit@1 and NDCG@5 in every family to "
        "minirerank_config.json. The answer may be a partial configuration or dense.",
    )
    calibrate.add_argument("--model", required=True, help="the checkpoint (adapted or not): folder or hub id")
    calibrate.add_argument(
        "--teacher",
        default=None,
        help="the dense reference; default: the base named in the folder's adapt.json, else --model itself",
    )
    calibrate.add_argument("--embedder", default=None, metavar="PATH", help="checkpoint that guides token pruning")
    _data_arguments(calibrate)
    calibrate.add_argument("--target", type=float, default=0.97, help="retention to keep (default 0.97)")
    calibrate.add_argument(
        "--reference", choices=["auto", "labels", "teacher"], default="auto", help="auto: labels when present"
    )
    calibrate.add_argument("--exits", type=int, nargs="+", default=None, metavar="L", help="exit layers to try")
    calibrate.add_argument(
        "--bands",
        nargs="+",
        default=None,
        metavar="BAND",
        help="bands to try: none (query-first prompt), full (vision-first, [0, exit)), or START:END",
    )
    calibrate.add_argument("--keeps", type=float, nargs="+", default=None, metavar="R", help="keep ratios to try")
    calibrate.add_argument("--guides", nargs="+", default=["embedder"], choices=["embedder", "random"])
    calibrate.add_argument(
        "--document-reuse",
        type=float,
        default=0.0,
        metavar="S",
        help="share of candidates already in the prefix store when serving (0 = every document new)",
    )
    calibrate.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where to write minirerank_config.json, calibration.json/.md/.png; default: --model's folder",
    )
    calibrate.add_argument("--device", default="cpu")
    calibrate.set_defaults(handler=_calibrate)


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`AdaptSettings` field (``--queries-per-step`` for ``queries_per_step``), its default
    and description read from the field."""
    from ..quality.settings import AdaptSettings

    add_settings_flags(parser, AdaptSettings)


def settings_from_args(args: argparse.Namespace) -> AdaptSettings:
    """The :class:`AdaptSettings` of the parsed flags (checked: a bad value is a ``ConfigError``)."""
    from ..quality.settings import AdaptSettings

    return settings_from_flags(args, AdaptSettings)


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        nargs="+",
        action="extend",
        default=[],
        metavar="DIR",
        help="task directories (tasks.jsonl + images/, docs/data-format.md; relevance optional)",
    )
    parser.add_argument("--documents", default=None, metavar="PATH", help="a folder or JSONL file of documents")
    parser.add_argument(
        "--queries", default=None, metavar="FILE", help="with --documents: JSONL of queries and retrieved ids"
    )
    parser.add_argument(
        "--repeat",
        nargs="+",
        action="extend",
        default=[],
        metavar="FAMILY=N",
        help="repeat a family's tasks N times in the mix",
    )


def load_groups(args: argparse.Namespace) -> list[RerankTask]:
    """The tasks of ``--data`` or ``--documents``/``--queries``, with ``--repeat`` applied."""
    from ..errors import InputError
    from ..quality.adapt import repeat_families
    from ..quality.data import load_retrieved, load_tasks

    if bool(args.documents) != bool(args.queries):
        raise InputError("--documents and --queries go together")
    tasks = [task for directory in args.data for task in load_tasks(directory)]
    if args.documents:
        tasks += load_retrieved(args.documents, args.queries)
    if not tasks:
        raise InputError("no groups: pass --data DIR or --documents PATH --queries FILE")
    repeats = {}
    for item in args.repeat:
        family, _, count = item.partition("=")
        if not count.isdigit() or int(count) < 1:
            raise InputError(f"--repeat {item!r}: use FAMILY=N with N >= 1")
        repeats[family] = int(count)
    return repeat_families(tasks, repeats)


def parse_config(value: str, depth: int) -> RerankConfig:
    """A preset name, a JSON file, or inline JSON, checked against ``depth``."""
    from pydantic import ValidationError

    from ..engine.config import PresetName, RerankConfig
    from ..errors import ConfigError

    try:
        if value in get_args(PresetName):
            return RerankConfig.preset(value, depth)  # type: ignore[arg-type]
        inline = value.lstrip().startswith("{")
        text = value if inline else Path(value).read_text(encoding="utf-8")
        return RerankConfig.model_validate_json(text).resolve(depth)
    except (ValidationError, ValueError, OSError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--config {value!r}: not a preset, a config file or RerankConfig JSON ({exc})") from exc


def _adapt(args: argparse.Namespace) -> int:
    from ..errors import MiniRerankError

    try:
        return _run_adapt(args)
    except MiniRerankError as exc:
        return fail(exc)


def _run_adapt(args: argparse.Namespace) -> int:
    from ..engine.modeling import load_backbone
    from ..engine.reranker import MiniReranker
    from ..quality.adapt import adapt, check_output_folder

    settings = settings_from_args(args)
    # Refused before minutes of loading: an output that would overwrite the model or someone's files.
    check_output_folder(args.out, args.model, overwrite=args.overwrite, resume=not args.no_resume)
    tasks = load_groups(args)
    backbone = load_backbone(args.model, device=args.device)
    target = parse_config(args.config, backbone.num_layers)
    print(f"adapting {args.model} to {target.model_dump_json(include=_FAST)} on {len(tasks)} groups", file=sys.stderr)
    reranker = MiniReranker(backbone, "dense")
    result = adapt(
        reranker,
        tasks,
        target,
        args.out,
        settings,
        resume=not args.no_resume,
        overwrite=args.overwrite,
        teacher_cache=args.teacher_cache,
        stop_after=args.stop_after,
        base_name=args.model,
    )
    cache = "read from cache" if result.teacher_cache_hit else f"computed in {result.teacher_seconds:.0f} s"
    print(f"teacher scores: {cache}, {result.teacher_cache} ({result.teacher_cache_bytes / 1e6:.2f} MB)")
    print(f"steps: {result.steps_done} of {settings.steps} ({result.train_seconds:.0f} s this run)")
    if result.finished:
        print(f"checkpoint: {result.checkpoint}" + (f"; LoRA adapter: {result.lora}" if result.lora else ""))
        print(f"next: minirerank calibrate --model {result.checkpoint} --data <validation groups>")
    else:
        print(f"stopped early; run the same command again to resume from {Path(args.out) / 'state'}")
    return EXIT_OK


def _calibrate(args: argparse.Namespace) -> int:
    from ..errors import MiniRerankError

    try:
        return _run_calibrate(args)
    except MiniRerankError as exc:
        return fail(exc)


def _run_calibrate(args: argparse.Namespace) -> int:
    import json

    from ..engine.config import RerankConfig
    from ..engine.modeling import ADAPT_FILE, CONFIG_FILE
    from ..engine.reranker import MiniReranker
    from ..errors import InputError
    from ..quality.calibrate import calibrate, default_grid, grid, plot_frontier

    tasks = load_groups(args)
    folder = Path(args.model)
    teacher_name = args.teacher
    if teacher_name is None and (folder / ADAPT_FILE).is_file():
        teacher_name = json.loads((folder / ADAPT_FILE).read_text(encoding="utf-8")).get("base")
    model = MiniReranker.from_pretrained(args.model, config="dense", device=args.device, embedder=args.embedder)
    teacher = (
        model if not teacher_name else MiniReranker.from_pretrained(teacher_name, config="dense", device=args.device)
    )
    depth = model.num_layers
    configs = default_grid(depth)
    if args.exits or args.bands or args.keeps or args.guides != ["embedder"]:
        bands: list[tuple[int, int] | str | None] = []
        for band in args.bands or ["none", "full"]:
            if band in ("none", "full"):
                bands.append(None if band == "none" else "full")
            else:
                start, _, end = band.partition(":")
                if not (start.isdigit() and end.isdigit()):
                    raise InputError(f"--bands {band!r}: use none, full or START:END")
                bands.append((int(start), int(end)))
        exits = args.exits or sorted({max(1, round(depth * f)) for f in (0.5, 0.75, 1.0)})
        configs = grid(depth, exits=exits, bands=bands, keeps=args.keeps or [1.0, 0.5], guides=args.guides)
    print(f"calibrating {args.model} on {len(tasks)} groups, {len(configs)} configurations ...", file=sys.stderr)
    result = calibrate(
        model,
        teacher,
        tasks,
        configs=configs,
        target=args.target,
        reference=args.reference,
        document_reuse=args.document_reuse,
    )
    print(result.table())
    out = Path(args.out) if args.out else folder
    if not out.is_dir() and args.out is None:
        raise InputError(f"{args.model} is not a local folder; pass --out DIR to write the choice")
    out.mkdir(parents=True, exist_ok=True)
    chosen = result.chosen.config if result.chosen is not None else RerankConfig.preset("dense", depth)
    if result.chosen is None or result.answer == "dense":
        print(f"answer: dense ({result.answer}); no fast configuration keeps {args.target} of the reference")
    else:
        print(f"answer: {result.answer}, lowest retention {result.chosen.min_retention:.3f} (target {args.target})")
    (out / CONFIG_FILE).write_text(chosen.model_dump_json(indent=1) + "\n", encoding="utf-8")
    document = {
        "model": args.model,
        "teacher": teacher_name or args.model,
        "reference": result.reference,
        "target": args.target,
        "groups": len(tasks),
        "document_reuse": args.document_reuse,
        "answer": result.answer,
        "chosen": chosen.model_dump(mode="json"),
        "candidates": [
            {
                "config": c.config.model_dump(mode="json", include=_FAST),
                "kind": describe_config(c.config, depth),
                "retention": c.retention,
                "min_retention": c.min_retention,
                "per_pair_s": c.timing.per_pair_s,
                "per_document_s": c.timing.per_document_s,
                "cost_s": c.cost,
                "meets_target": c.meets,
            }
            for c in result.candidates
        ],
    }
    (out / "calibration.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    (out / "calibration.txt").write_text(result.table() + "\n", encoding="utf-8")
    plot_frontier(result, out / "calibration.png", title=f"Calibration of {folder.name or args.model}")
    print(f"wrote {out / CONFIG_FILE}, calibration.json, calibration.txt and calibration.png in {out}", file=sys.stderr)
    return EXIT_OK


def describe_config(config, depth: int) -> str:
    from ..quality.calibrate import describe

    return describe(config, depth)


_FAST = {"format", "exit_layer", "band", "keep_ratio", "pruning_guide"}
