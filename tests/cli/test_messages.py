"""Messages: loading errors are ModelLoadError, CLI errors are one line, messages name the real source and
side, and warnings never break a call."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch
from hostile import QUERY, A, docs
from PIL import Image

from minirerank_integrations import (
    CandidateError,
    ConfigError,
    InputError,
    MiniReranker,
    ModelLoadError,
    Query,
)
from minirerank_integrations.cli import main
from minirerank_integrations.engine.inputs import Candidate
from minirerank_integrations.store import DiskPrefixStore


def test_model_loading_errors_are_model_load_errors(tiny4_path, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny4_path, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100] + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot load"):
        MiniReranker.from_pretrained(broken)
    with pytest.raises(ModelLoadError, match="no model folder"):
        MiniReranker.from_pretrained(tmp_path / "not-there")
    with pytest.raises(ModelLoadError, match="no model folder"):
        MiniReranker.from_pretrained(str(tmp_path / "a" / "b"))
    for device, message in (("cuda", "CUDA is not available"), ("nonsense", "unknown device")):
        if device == "cuda" and torch.cuda.is_available():
            continue
        with pytest.raises(ConfigError, match=message):
            MiniReranker.from_pretrained(tiny4_path, device=device)


def test_cli_errors_are_one_line(tiny4_path, tmp_path, capsys):
    def run(*argv: str) -> tuple[int, str]:
        status = main(list(argv))
        return status, capsys.readouterr().err

    broken = tmp_path / "broken"
    shutil.copytree(tiny4_path, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    garbage = tmp_path / "garbage"
    DiskPrefixStore(garbage).close()
    (garbage / "cache.db").write_bytes(b"not sqlite" * 100)
    cases = [
        (("rerank", "--model", str(tiny4_path), "--query", "x"), "no candidates"),
        (("rerank", "--model", str(tiny4_path), "--query", "x", "--text", "a", "--device", "bogus"), "device"),
        (("rerank", "--model", str(broken), "--query", "x", "--text", "a"), "cannot load"),
        (("demo", "--query", ""), "--query"),
        (("serve", "--model", str(tiny4_path), "--torch-threads", "0"), "--torch-threads"),
    ]
    if not torch.cuda.is_available():
        cases.append(
            (("rerank", "--model", str(tiny4_path), "--query", "x", "--text", "a", "--device", "cuda"), "CUDA")
        )
    for argv, needle in cases:
        status, err = run(*argv)
        assert status == 2 and needle in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    status, err = run("rerank", "--model", str(tiny4_path), "--query", "x", "--text", "a", "--cache-dir", str(garbage))
    assert status == 0 and "deleting the directory" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and "minirerank 0." in capsys.readouterr().out


def test_messages_name_the_real_source_and_side(reranker, tmp_path):
    with pytest.raises(InputError) as info:
        reranker.score([(Query(text="q", images=[str(tmp_path / "gone.png")]), "doc")])
    assert not isinstance(info.value, CandidateError) and "the query of pair 0's image 0" in str(info.value)
    with pytest.raises(InputError, match="the query's image 0"):
        reranker.rerank(Query(images=[b"not an image"]), ["doc"])
    shot = tmp_path / "shot.png"
    Image.new("RGB", (40, 40)).save(shot)
    with pytest.raises(CandidateError) as info:
        reranker.rerank("q", [Candidate(images=[f"{shot}\n"])])
    assert repr(f"{shot}\n") in str(info.value)  # shown as given: the newline is visible
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x00garbage" * 20)
    with pytest.raises(CandidateError) as info:
        reranker.rerank("q", [Candidate(images=[garbage])])
    assert str(garbage) in str(info.value) and "BytesIO" not in str(info.value)
    assert os.path.exists(shot)


def test_warnings_do_not_break_a_call(tiny4_path, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing above warns on a healthy store
        engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=tmp_path / "store")
        assert len(engine.rerank(QUERY, docs())) == 3
