"""``minirerank adapt`` through the CLI: its flags are AdaptSettings' fields with their defaults, every preset
name is a --config, and an output folder that is (or lies inside) the model folder, or holds other files, is
refused with one line before anything is loaded or written."""

from __future__ import annotations

import json
import shutil

import pytest

from minirerank_integrations.cli import build_parser, main
from minirerank_integrations.engine.config import RerankConfig
from minirerank_integrations.engine.modeling import ADAPT_FILE, CONFIG_FILE
from minirerank_integrations.quality.adapt import AdaptSettings
from minirerank_integrations.quality.data import generate, save_tasks


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("groups")
    save_tasks(generate("text_to_image", "train", 3, seed=0, candidates_per_query=5, image_size=64), directory)
    return directory


@pytest.fixture
def model(tiny4_path, tmp_path):
    """A private copy of the tiny checkpoint: a refused run must leave it exactly as it was."""
    folder = tmp_path / "model"
    shutil.copytree(tiny4_path, folder)
    return folder


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("minirerank: "), err
    for needle in needles:
        assert needle in err, err
    return err


_FAST_RUN = ["--steps", "1", "--queries-per-step", "2", "--group-size", "4", "--teacher-top", "2"]


def test_flags_are_the_settings_fields_with_their_defaults():
    args = build_parser().parse_args(["adapt", "--model", "m", "--out", "o"])
    defaults = AdaptSettings()
    for name in AdaptSettings.model_fields:
        assert getattr(args, name) == getattr(defaults, name), name
    args = build_parser().parse_args(
        ["adapt", "--model", "m", "--out", "o", "--micro-batch-pairs", "8", "--lr", "2e-4"]
    )
    assert (args.micro_batch_pairs, args.lr) == (8, 2e-4)


def test_a_bad_setting_is_one_line_naming_it(model, data, tmp_path, capsys):
    argv = ["adapt", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out")]
    _refused(capsys, [*argv, "--group-size", "4", "--teacher-top", "5"], "teacher_top (5)", "group_size (4)")
    _refused(capsys, [*argv, "--ema", "1.0"], "ema")
    assert not (tmp_path / "out").exists()


def test_out_equal_to_or_inside_the_model_folder_is_refused(model, data, tmp_path, capsys):
    before = _files(model)
    link = tmp_path / "link-to-model"
    link.symlink_to(model, target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    spellings = [model, f"{tmp_path}/elsewhere/../model", link, model / "adapted", link / "sub" / "adapted"]
    for out in spellings:
        argv = ["adapt", "--model", str(model), "--data", str(data), "--out", str(out), *_FAST_RUN]
        what = "is inside the model folder" if str(out).endswith("adapted") else "is the model folder"
        _refused(capsys, argv, what, "choose an output folder outside it")
        _refused(capsys, [*argv, "--overwrite"], what)  # --overwrite never covers the model itself
    # The model named through the link is the same folder.
    _refused(capsys, ["adapt", "--model", str(link), "--data", str(data), "--out", str(model)], "is the model folder")
    assert _files(model) == before and not (model / "adapted").exists()


def test_a_non_empty_out_needs_overwrite_and_every_preset_is_a_config(model, data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    argv = ["adapt", "--model", str(model), "--data", str(data), "--out", str(out), *_FAST_RUN]
    _refused(capsys, [*argv, "--config", "paper-narrow"], "already holds files", "--overwrite")
    assert _files(out) == {"notes.txt": b"mine\n"}
    assert main([*argv, "--config", "paper-narrow", "--overwrite"]) == 0
    assert "checkpoint:" in capsys.readouterr().out
    saved = RerankConfig.model_validate_json((out / CONFIG_FILE).read_text())
    assert saved == RerankConfig.preset("paper-narrow", 4)
    assert (out / "notes.txt").read_text() == "mine\n"  # written into, not wiped
    record = json.loads((out / ADAPT_FILE).read_text())
    assert record["settings"] == AdaptSettings(steps=1, queries_per_step=2, group_size=4, teacher_top=2).model_dump()


def test_an_earlier_run_in_out_is_resumed_not_refused(model, data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["adapt", "--model", str(model), "--data", str(data), "--out", str(out), "--config", "paper"]
    argv += ["--steps", "2", "--queries-per-step", "2", "--group-size", "4", "--teacher-top", "2"]
    assert main([*argv, "--stop-after", "1"]) == 0
    assert "stopped early" in capsys.readouterr().out
    _refused(capsys, [*argv, "--no-resume"], "an earlier adapt run (resuming is off)", "--overwrite")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "teacher scores: read from cache" in printed and "steps: 2 of 2" in printed
