"""``BenchSettings`` as validated data and ``minirerank bench``'s flags generated from its fields: the CLI's
defaults are the model's, a flag sets its field, and a bad value is a ``ConfigError`` (one line on the CLI)."""

from __future__ import annotations

import pytest

from minirerank_integrations.bench.settings import ENGINE_METHODS, BenchSettings
from minirerank_integrations.bench.shapes import SHAPES
from minirerank_integrations.cli import build_parser, main
from minirerank_integrations.cli.flags import settings_from_flags
from minirerank_integrations.errors import ConfigError


def test_the_cli_defaults_are_the_settings_defaults():
    args = build_parser().parse_args(["bench"])
    defaults = BenchSettings()
    for name in BenchSettings.model_fields:
        assert getattr(args, name) == getattr(defaults, name), name
    assert settings_from_flags(args, BenchSettings) == defaults


def test_each_flag_sets_its_field():
    argv = ["bench", "--shape", "tiny", "--sizes", "64", "48", "--warm-n", "10", "2", "--large-n", "1000"]
    argv += ["--guide-layers", "2", "all", "--detail-sizes", "64", "--methods", "paper", "+band"]
    argv += ["--storage", "int8", "--dtype", "bfloat16", "--vocabulary", "workload", "--seed", "3"]
    argv += ["--no-profile", "--no-instruction-row", "--work-dir", "w", "--device", "cuda:1"]
    settings = settings_from_flags(build_parser().parse_args(argv), BenchSettings)
    assert settings == BenchSettings(
        shape="tiny",
        sizes=(64, 48),
        warm_n=(2, 10),  # sorted
        large_n=1000,
        guide_layers=(2, None),  # 'all' is the full-depth guide
        detail_sizes=(64,),
        methods=("paper", "+band"),
        storage="int8",
        dtype="bfloat16",
        vocabulary="workload",
        seed=3,
        profile=False,
        instruction_in_prefix=False,
        work_dir="w",
        device="cuda:1",
    )


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"sizes": (128, 16)}, "sizes[1]"),
        ({"sizes": ()}, "sizes"),
        ({"warm_n": (0,)}, "warm_n[0]"),
        ({"dense_batch": 0}, "dense_batch"),
        ({"ingest_docs": -1}, "ingest_docs"),
        ({"guide_layers": (0, None)}, "guide_layers[0]"),
        ({"shape": "qwen3-vl-99b"}, "unknown shape 'qwen3-vl-99b'"),
        ({"methods": ("paper", "fast")}, "methods[1]"),
        ({"storage": "int4"}, "storage"),
        ({"vocabulary": "bert"}, "vocabulary"),
        ({"dtype": "float64"}, "dtype"),
        ({"warmn": (1,)}, "warmn"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_field(values, named):
    with pytest.raises(ConfigError, match="invalid BenchSettings") as caught:
        BenchSettings(**values)
    assert named in str(caught.value)


def test_the_cli_refuses_a_bad_value_in_one_line_naming_the_flag(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", "--sizes", "64", "16", "--dense-pairs", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("minirerank: invalid BenchSettings")
    assert "--sizes[1]" in err and "greater than or equal to 32" in err and "--dense-pairs" in err
    assert not out.exists()  # refused before anything is written


def test_every_field_is_described_and_the_choices_come_from_one_place():
    for name, field in BenchSettings.model_fields.items():
        assert field.description and len(field.description.split()) >= 3, name
    assert build_parser().parse_args(["bench"]).methods == ENGINE_METHODS
    for shape in SHAPES:  # the shapes table is the flag's list of choices
        assert build_parser().parse_args(["bench", "--shape", shape]).shape == shape
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--shape", "qwen3-vl-99b"])
