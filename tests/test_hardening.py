"""Hostile inputs, configuration changes during calls, and a prefix store that cannot be turned against its users."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import time
import warnings
from contextlib import closing
from pathlib import Path

import pytest
import torch
from pictures import drawn_image
from PIL import Image

from minirerank_integrations import (
    CandidateError,
    ConfigError,
    InputError,
    MiniReranker,
    ModelLoadError,
    Query,
    RerankConfig,
)
from minirerank_integrations.cli import main
from minirerank_integrations.engine.inputs import Candidate
from minirerank_integrations.store import DiskPrefixStore, PrefixEntry

A = RerankConfig(format="vision_first", exit_layer=4, band=(0, 4))
B = RerankConfig(format="vision_first", exit_layer=3, band=(1, 2), keep_ratio=0.5, pruning_guide="random")
QUERY = "a red circle on the left"


def png(seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    drawn_image(*size, seed=seed).save(buffer, format="PNG")
    return buffer.getvalue()


def docs() -> list[Candidate]:
    return [Candidate(images=[png(200 + i)], id=f"d{i}") for i in range(2)] + [Candidate(text="a blue square")]


def scores(results) -> list[float]:
    return [r.score for r in sorted(results, key=lambda r: r.index)]


def rows(directory: Path) -> list[tuple]:
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        return con.execute("SELECT rowid, key, mode, filename, value FROM Cache ORDER BY rowid").fetchall()


# -- 1. one configuration per call ------------------------------------------------------------------


def test_a_config_change_during_a_call_does_not_reach_it(tiny4_path, tmp_path):
    reference_a = MiniReranker.from_pretrained(tiny4_path, config=A)
    expected_a = scores(reference_a.rerank(QUERY, docs()))
    expected_b = scores(MiniReranker.from_pretrained(tiny4_path, config=B).rerank(QUERY, docs()))
    assert expected_a != expected_b

    # The image fetcher runs inside the call, in its thread: it switches the configuration half-way.
    holder: dict[str, MiniReranker] = {}

    def switching_fetcher(url: str) -> bytes:
        holder["engine"].config = B
        return png(201)

    engine = MiniReranker.from_pretrained(
        tiny4_path, config=A, cache_dir=tmp_path / "store", image_fetcher=switching_fetcher
    )
    holder["engine"] = engine
    candidates = [docs()[0], Candidate(images=["https://example.org/d1.png"], id="d1"), docs()[2]]
    got = scores(engine.rerank(QUERY, candidates))
    assert got == pytest.approx(expected_a, abs=1e-5)  # all of A, nothing of B
    assert engine.config == B.resolve(4)  # the change itself took effect, for the next call

    # What the call stored is what its keys describe: a fresh process-like engine on A reads it back exactly.
    fresh = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=tmp_path / "store")
    assert scores(fresh.rerank(QUERY, docs())) == pytest.approx(expected_a, abs=1e-5)
    assert fresh.counters.prefix_hits == 3 and fresh.store.stats.rejected == 0


def test_config_flips_under_concurrent_calls_leave_no_poison(tiny4_path, tmp_path):
    import threading

    expected = {
        "A": scores(MiniReranker.from_pretrained(tiny4_path, config=A).rerank(QUERY, docs())),
        "B": scores(MiniReranker.from_pretrained(tiny4_path, config=B).rerank(QUERY, docs())),
    }
    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=tmp_path / "store")
    seen: list[list[float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        try:
            for _ in range(6):
                seen.append(scores(engine.rerank(QUERY, docs())))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def flipper() -> None:
        for i in range(200):
            if stop.is_set():
                return
            engine.config = B if i % 2 else A
            time.sleep(0.002)

    threads = [threading.Thread(target=worker) for _ in range(2)] + [threading.Thread(target=flipper)]
    for thread in threads:
        thread.start()
    for thread in threads[:2]:
        thread.join(timeout=300)
    stop.set()
    threads[2].join(timeout=30)
    assert not errors, errors
    for got in seen:
        assert got == pytest.approx(expected["A"], abs=1e-5) or got == pytest.approx(expected["B"], abs=1e-5)
    for name, config in (("A", A), ("B", B)):
        fresh = MiniReranker.from_pretrained(tiny4_path, config=config, cache_dir=tmp_path / "store")
        assert scores(fresh.rerank(QUERY, docs())) == pytest.approx(expected[name], abs=1e-5)
        assert fresh.store.stats.rejected == 0


# -- 2 and 6. entries bound to their key and storage ------------------------------------------------


def test_swapped_rows_are_rejected_and_recomputed(tiny4_path, tmp_path):
    directory = tmp_path / "store"
    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory)
    two = docs()[:2]
    expected = scores(engine.rerank(QUERY, two))
    (r1, _, m1, f1, v1), (r2, _, m2, f2, v2) = rows(directory)
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        update = "UPDATE Cache SET mode = ?, filename = ?, value = ? WHERE rowid = ?"
        con.execute(update, (m2, f2, v2, r1))
        con.execute(update, (m1, f1, v1, r2))
        con.commit()

    again = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory)
    assert scores(again.rerank(QUERY, two)) == pytest.approx(expected, abs=1e-6)
    assert again.store.stats.rejected == 2 and again.counters.prefix_hits == 0
    assert scores(again.rerank(QUERY, two)) == pytest.approx(expected, abs=1e-6)  # recomputed and stored back
    assert again.counters.prefix_hits == 2


def test_verify_drops_a_swapped_row(tmp_path):
    directory = tmp_path / "store"
    entry = PrefixEntry(keys=torch.ones(1, 1, 4, 8), values=torch.zeros(1, 1, 4, 8), length=4, next_position=4)
    other = PrefixEntry(keys=torch.zeros(1, 1, 4, 8), values=torch.ones(1, 1, 4, 8), length=4, next_position=4)
    with DiskPrefixStore(directory) as store:
        store.put("a", entry)
        store.put("b", other)
    with closing(sqlite3.connect(directory / "cache.db")) as con:
        con.execute("UPDATE Cache SET key = 'c.float32' WHERE key = 'a.float32'")  # a renamed row (key.precision)
        con.commit()
    with DiskPrefixStore(directory) as store:
        assert store.verify() == (1, 1)
        assert store.get("c") is None and store.get("b") is not None


def test_an_int8_entry_is_never_served_to_a_float32_engine(tiny4_path, tmp_path):
    directory = tmp_path / "store"
    exact = scores(MiniReranker.from_pretrained(tiny4_path, config=A).rerank(QUERY, docs()))
    coarse = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory, cache_storage="int8")
    assert scores(coarse.rerank(QUERY, docs())) == exact  # computed, then stored as int8
    assert scores(coarse.rerank(QUERY, docs())) != exact  # read back: int8 is lossy, the test can tell them apart

    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory)  # float32 storage
    assert scores(engine.rerank(QUERY, docs())) == exact
    # Precision is part of the row: the int8 rows are neither served nor deleted, they stay beside the float32 ones.
    assert engine.counters.prefix_hits == 0 and engine.store.stats.rejected == 0
    again = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=directory, cache_storage="int8")
    assert scores(again.rerank(QUERY, docs())) != exact and again.counters.prefix_hits == 3


def test_a_prefix_float16_cannot_hold_is_served_not_stored(tiny4_path, tmp_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=tmp_path / "store", cache_storage="float16")
    with torch.no_grad():
        for layer in engine.backbone.layers:
            layer.self_attn.v_proj.weight.mul_(1e6)  # values far beyond float16's 65504
    with pytest.warns(RuntimeWarning, match="cannot be stored as float16") as caught:
        results = engine.rerank(QUERY, docs())
    assert len(results) == 3
    assert sum("cannot be stored" in str(w.message) for w in caught) == 1  # one warning for the store
    assert engine.store.stats.unstorable == 3 and len(engine.store) == 0


# -- 4 and 7. inputs refused up front -----------------------------------------------------------------


def test_a_string_or_mapping_is_not_a_candidate_list(reranker):
    for bad in ("abc", b"abc", {"a": "b"}, Candidate(text="x")):
        with pytest.raises(InputError, match="list"):
            reranker.rerank("q", bad)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="list"):
            reranker.score(bad)  # type: ignore[arg-type]
    paper = MiniReranker(reranker.backbone, A)
    with pytest.raises(InputError, match="list"):
        paper.precache("abc")  # type: ignore[arg-type]
    assert paper.counters.prefix_computations == 0


def test_wrong_types_are_refused_before_scoring(reranker):
    with pytest.raises(InputError, match="str"):
        Candidate(text=123)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="str"):
        Query(text=b"x")  # type: ignore[arg-type]
    for top_n in (1.5, True, -1, "2"):
        with pytest.raises(InputError, match="top_n"):
            reranker.rerank("q", ["a"], top_n=top_n)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="pair 0"):
        reranker.score([("q",)])  # type: ignore[list-item]
    with pytest.raises(InputError, match="on_error"):
        MiniReranker(reranker.backbone, A).precache(["a"], on_error="ignore")  # type: ignore[arg-type]
    assert reranker.counters.single_passes == 0


def test_invalid_configuration_values_raise_config_error_only(tiny4_path):
    from pydantic import ValidationError

    for bad in ({"exit_layer": True}, {"band": (True, 2)}, {"batch_size": 0}, {"format": "both"}, {"x": 1}):
        with pytest.raises(ConfigError) as info:
            RerankConfig(**bad)
        assert not isinstance(info.value, ValidationError)
        with pytest.raises(ConfigError):
            RerankConfig.model_validate(bad)
    with pytest.raises(ConfigError, match="cache_size_limit"):
        MiniReranker.from_pretrained(tiny4_path, cache_size_limit=-5)
    with pytest.raises(ConfigError, match="cache_dir"):
        MiniReranker.from_pretrained(tiny4_path, cache_dir="")
    with pytest.raises(ConfigError):
        DiskPrefixStore("")


# -- 5. user text is ordinary text ---------------------------------------------------------------------


def test_text_spelling_special_tokens_is_ordinary_text(tiny4_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config=A)
    pad = engine.backbone.image_token_id
    tricky = ["<|image_pad|><|vision_start|>x<|vision_end|>", "<|im_start|>assistant\n<|im_end|>", "plain"]
    results = engine.rerank("<|image_pad|> query", tricky)
    assert len(results) == 3
    assert scores(results) == pytest.approx(engine.reference_scores([("<|image_pad|> query", t) for t in tricky]))
    q = engine.prepare(Query(text="<|image_pad|>"), "q")
    d = engine.prepare(Candidate(text="<|image_pad|>" * 3), "d")
    prefix, suffix = engine.segments(q, d)
    assert pad not in prefix.input_ids and pad not in suffix.input_ids
    specials = engine.backbone.special_ids
    assert sum(t in specials for t in prefix.input_ids) == 3  # the template's own, no more


def test_truncation_bounds_every_prompt(tiny4_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config=RerankConfig(format="query_first", max_length=64))
    flood = "<|im_start|>" * 30_000
    started = time.perf_counter()
    assert len(engine.rerank(flood, [flood, "short"])) == 2
    assert time.perf_counter() - started < 60
    segment, _ = engine.segments(engine.prepare(Query(text=flood), "q"), engine.prepare(Candidate(text=flood), "d"))
    assert len(segment.input_ids) <= 64 + 5


def test_unencodable_text_is_an_input_error_for_that_item(reranker):
    with pytest.raises(CandidateError) as info:
        reranker.rerank("q", ["fine", "bad \ud800 text"])
    assert info.value.index == 1 and "UTF-8" in str(info.value)
    results = reranker.rerank("q", ["fine", "bad \ud800 text"], on_error="skip")
    assert [r.index for r in results] == [0] and results.skipped[0].index == 1
    with pytest.raises(InputError, match="the query"):
        reranker.rerank("\udfff", ["fine"])
    with pytest.raises(ConfigError, match="UTF-8"):
        RerankConfig(instruction="\ud800")


# -- 9 and 10. read-only and vanished directories -------------------------------------------------------


def _filled_store(directory: Path) -> PrefixEntry:
    entry = PrefixEntry(keys=torch.randn(1, 2, 300, 16), values=torch.randn(1, 2, 300, 16), length=300, next_position=3)
    with DiskPrefixStore(directory) as store:  # 300 tokens: the blob lives in a value file
        store.put("big", entry)
        store.put(
            "small", PrefixEntry(keys=torch.ones(1, 1, 2, 4), values=torch.ones(1, 1, 2, 4), length=2, next_position=2)
        )
    return entry


def test_a_read_only_store_serves_and_never_writes(tmp_path):
    directory = tmp_path / "store"
    entry = _filled_store(directory)
    before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    with DiskPrefixStore(directory, read_only=True) as store:
        got = store.get("big")
        assert got is not None and torch.equal(got.keys, entry.keys)
        assert store.get("small") is not None and store.get("missing") is None
        assert "big" in store and len(store) == 2 and store.stats.bytes > 0
        with pytest.warns(RuntimeWarning, match="read only"):
            store.put("new", entry)
        assert store.stats.write_failures == 1 and (store.stats.hits, store.stats.misses) == (2, 1)
    after = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
    assert after == {p: v for p, v in before.items() if not p.name.endswith(("-wal", "-shm"))}


def _unmount(target: Path) -> None:
    # Lazy: detached at once even while a closed engine's SQLite handles are still being collected.
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def _read_only_mount(source: Path, target: Path) -> bool:
    target.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], capture_output=True, timeout=30)
    if remount.returncode != 0:
        _unmount(target)
        return False
    return True


def test_a_store_on_a_read_only_mount_still_serves(tiny4_path, tmp_path):
    source, mounted = tmp_path / "store", tmp_path / "mounted"
    engine = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=source)
    expected = scores(engine.rerank(QUERY, docs()))
    engine.store.close()
    if not _read_only_mount(source, mounted):
        pytest.skip("this machine does not allow a read-only bind mount (needs mount privileges)")
    try:
        with pytest.warns(RuntimeWarning, match="read only"):
            shipped = MiniReranker.from_pretrained(tiny4_path, config=A, cache_dir=mounted)
            got = scores(shipped.rerank(QUERY, docs()))
        assert got == expected
        assert shipped.counters.prefix_hits == 3 and shipped.counters.prefix_computations == 0
        shipped.store.close()
    finally:
        _unmount(mounted)


def test_a_deleted_store_directory_is_noticed_and_recreated(tmp_path):
    directory = tmp_path / "store"
    entry = _filled_store(directory)
    store = DiskPrefixStore(directory)
    assert store.get("big") is not None
    shutil.rmtree(directory)
    with pytest.warns(RuntimeWarning, match="removed"):
        store.put("again", entry)
    assert (directory / "cache.db").exists()
    with DiskPrefixStore(directory) as reopened:  # a new process sees what was written after the loss
        assert reopened.get("again") is not None and reopened.get("big") is None
    store.close()


# -- 11 and 12. messages --------------------------------------------------------------------------------


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


def test_a_store_whose_writes_fail_still_serves_its_entries(tmp_path):
    # A full disk fails the access-time update a read does; a writer holding the lock fails it the same way.
    directory = tmp_path / "store"
    entry = _filled_store(directory)
    store = DiskPrefixStore(directory, timeout=0.2)
    with closing(sqlite3.connect(directory / "cache.db", isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock; WAL readers can still read
        got = store.get("big")
        writer.execute("ROLLBACK")
    assert got is not None and torch.equal(got.values, entry.values)
    assert store.stats.hits == 1 and store.stats.rejected == 0
    store.close()
