"""The Redis prefix store against a real redis-server on loopback: sharing, faults, eviction, hostile values."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from pictures import drawn_image
from subprocesses import child_env

from minirerank_integrations import Candidate, ConfigError, MiniReranker, Query
from minirerank_integrations.store import (
    MemoryPrefixStore,
    PrefixEntry,
    PrefixStore,
    RedisPrefixStore,
    TieredPrefixStore,
    open_store,
)
from minirerank_integrations.testing import free_port

QUERY = Query(text="a red circle on the left")


def documents(n: int = 4, offset: int = 0) -> list[Candidate]:
    sizes = [(64, 64), (96, 64), (128, 96), (64, 128)]
    return [
        Candidate(images=[drawn_image(*sizes[i % 4], seed=300 + offset + i)], id=f"d{offset + i}") for i in range(n)
    ] + [Candidate(text=f"text document {offset}")]


def uncached(model: Path, docs: list[Candidate]) -> list[float]:
    return MiniReranker.from_pretrained(model, config="paper").score([(QUERY, d) for d in docs])


def stored_names(server) -> list[bytes]:
    return sorted(server.client().scan_iter(match="minirerank:prefix:*"))


def test_put_get_many_namespaces_and_ttl(redis_server, tiny4_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config="paper")
    engine.precache(documents(2), progress=False)
    entries = dict(engine.store._entries)  # the memory store's computed entries
    a = RedisPrefixStore(redis_server.url, namespace="model-a", ttl=60)
    b = RedisPrefixStore(redis_server.url, namespace="model-b")
    keys = list(entries)
    for key in keys:
        a.put(key, entries[key])
    got = a.get_many([*keys, "0" * 64])
    assert got[-1] is None
    for key, entry in zip(keys, got):
        assert entry is not None and entry.length == entries[key].length
        assert bool((entry.keys == entries[key].keys).all()) and bool((entry.values == entries[key].values).all())
    assert b.get_many(keys) == [None] * len(keys)  # another namespace sees none of them
    assert len(a) == len(keys) and len(b) == 0
    ttl_ms = redis_server.client().pttl(f"model-a:prefix:{keys[0]}.float32")
    assert 0 < ttl_ms <= 60_000
    assert (a.stats.hits, a.stats.misses, a.stats.writes) == (len(keys), 1, len(keys))
    assert a.clear() == len(keys) and len(a) == 0


def test_one_round_trip_fetches_every_prefix_of_a_call(redis_server, tiny4_path):
    docs = documents(4)
    writer = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    writer.score([(QUERY, d) for d in docs])
    reader = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    client = redis_server.client()
    client.config_resetstat()
    reader.score([(QUERY, d) for d in docs])
    stats = client.info("commandstats")
    # One pipeline of GETs (one per document) and no other read: the call found everything in one trip.
    assert stats["cmdstat_get"]["calls"] == len(docs)
    assert "cmdstat_exists" not in stats and "cmdstat_set" not in stats
    assert reader.counters.prefix_hits == len(docs)
    assert client.info("stats")["total_connections_received"] == 1  # the reader's one connection
    reader.counters.reset()
    client.config_resetstat()
    reader.score([(QUERY, d) for d in docs])  # now served by the memory tier: no network at all
    assert "cmdstat_get" not in client.info("commandstats")
    assert reader.counters.prefix_hits == len(docs)


_CHILD = textwrap.dedent(
    """
    import json
    from test_redis_store import QUERY, documents
    from minirerank_integrations import MiniReranker
    reranker = MiniReranker.from_pretrained({model!r}, config="paper", cache_url={url!r})
    scores = reranker.score([(QUERY, d) for d in documents({n})])
    print(json.dumps({{"scores": scores, "hits": reranker.counters.prefix_hits,
                      "computed": reranker.counters.prefix_computations}}))
    """
)


def _in_child(model: Path, url: str, n: int) -> dict:
    code = _CHILD.format(model=str(model), url=url, n=n)
    done = subprocess.run(
        [sys.executable, "-c", code], env=child_env(__file__), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_processes_share_one_redis(redis_server, tiny4_path):
    first = _in_child(tiny4_path, redis_server.url, 4)
    assert (first["hits"], first["computed"]) == (0, 5)
    second = _in_child(tiny4_path, redis_server.url, 4)
    assert (second["hits"], second["computed"]) == (5, 0)
    assert second["scores"] == pytest.approx(first["scores"], abs=1e-6)
    assert second["scores"] == pytest.approx(uncached(tiny4_path, documents(4)), abs=1e-6)


def test_redis_down_at_start_reranks_without_it_with_one_warning(tiny4_path):
    docs = documents(3)
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reranker = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=url, cache_memory_limit=0)
        first = reranker.score([(QUERY, d) for d in docs])
        second = reranker.score([(QUERY, d) for d in docs])
    down = [w for w in caught if issubclass(w.category, RuntimeWarning) and "cannot be reached" in str(w.message)]
    assert len(down) == 1, [str(w.message) for w in caught]
    assert first == pytest.approx(uncached(tiny4_path, docs), abs=1e-6) and second == pytest.approx(first, abs=1e-6)
    assert reranker.counters.prefix_computations == 2 * len(docs)
    assert reranker.store.stats.write_failures == 2 * len(docs)


class _KillAfterPuts(PrefixStore):
    """The real store, with the server killed after ``after`` writes: a crash in the middle of a call."""

    def __init__(self, store: PrefixStore, server, after: int) -> None:
        self.store, self.server, self.after = store, server, after

    @property
    def stats(self):  # type: ignore[override]
        return self.store.stats

    def get(self, key: str) -> PrefixEntry | None:
        return self.store.get(key)

    def get_many(self, keys):
        return self.store.get_many(keys)

    def put(self, key: str, entry: PrefixEntry) -> None:
        self.store.put(key, entry)
        self.after -= 1
        if self.after == 0:
            self.server.kill()

    def __contains__(self, key: object) -> bool:
        return key in self.store


def test_redis_killed_mid_rerank_and_restarted(redis_server, tiny4_path):
    docs = documents(4)
    expected = uncached(tiny4_path, docs)
    redis_store = RedisPrefixStore(redis_server.url, retry_min_s=0.05, retry_max_s=0.2)
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    reranker.store = _KillAfterPuts(redis_store, redis_server, after=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        during = reranker.rerank(QUERY, docs)  # the server dies after the second of five writes
        after = reranker.rerank(QUERY, docs)  # the next call's fetch fails too: all recomputed
    assert [r.score for r in sorted(during, key=lambda r: r.index)] == pytest.approx(expected, abs=1e-6)
    assert [r.score for r in sorted(after, key=lambda r: r.index)] == pytest.approx(expected, abs=1e-6)
    assert len([w for w in caught if "cannot be reached" in str(w.message)]) == 1
    assert redis_store.stats.writes == 2 and redis_store.stats.write_failures >= 3
    assert not redis_store.available

    redis_server.start()  # same port, empty (no persistence)
    time.sleep(0.25)  # past the longest backoff
    reranker.counters.reset()
    again = reranker.score([(QUERY, d) for d in docs])
    assert again == pytest.approx(expected, abs=1e-6)
    assert redis_store.available and len(redis_store) == len(docs)  # written again once it was back
    fresh = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    assert fresh.score([(QUERY, d) for d in docs]) == pytest.approx(expected, abs=1e-6)
    assert fresh.counters.prefix_hits == len(docs)


class _Planted:
    """Unpickling this creates a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_damaged_truncated_foreign_and_pickled_values_are_dropped_and_recomputed(redis_server, tiny4_path, tmp_path):
    docs = documents(4)
    expected = uncached(tiny4_path, docs)
    writer = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    writer.score([(QUERY, d) for d in docs])
    client = redis_server.client()
    names = stored_names(redis_server)
    assert len(names) == len(docs)
    marker = tmp_path / "unpickled"
    damaged = bytearray(client.get(names[0]))
    damaged[len(damaged) // 2] ^= 0xFF
    client.set(names[0], bytes(damaged))
    client.set(names[1], client.get(names[1])[:-100])  # truncated
    client.set(names[2], pickle.dumps(_Planted(marker)))
    client.delete(names[3])
    client.rpush(names[3], b"not a string")  # a foreign type under the key (WRONGTYPE for GET)

    reader = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    assert reader.score([(QUERY, d) for d in docs]) == pytest.approx(expected, abs=1e-6)
    assert not marker.exists()
    assert reader.store.stats.rejected == 4
    assert reader.counters.prefix_computations == 4 and reader.counters.prefix_hits == 1
    fresh = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    assert fresh.score([(QUERY, d) for d in docs]) == pytest.approx(expected, abs=1e-6)
    assert (fresh.counters.prefix_hits, fresh.store.stats.rejected) == (len(docs), 0)  # replaced by good ones


def test_values_swapped_between_keys_are_refused(redis_server, tiny4_path):
    docs = documents(4)
    expected = uncached(tiny4_path, docs)
    writer = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    writer.score([(QUERY, d) for d in docs])
    client = redis_server.client()
    first, second = stored_names(redis_server)[:2]
    a, b = client.get(first), client.get(second)
    client.set(first, b)
    client.set(second, a)
    reader = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    assert reader.score([(QUERY, d) for d in docs]) == pytest.approx(expected, abs=1e-6)
    assert reader.store.stats.rejected == 2


def test_eviction_at_maxmemory_only_costs_recomputation(redis_server, tiny4_path):
    docs = documents(8) + documents(8, offset=20)
    expected = uncached(tiny4_path, docs)
    client = redis_server.client()
    baseline = client.info("memory")["used_memory"]
    probe = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    probe.precache(docs, progress=False)
    all_entries = client.info("memory")["used_memory"] - baseline  # what every entry takes on the server
    client.flushall()
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_set("maxmemory", client.info("memory")["used_memory"] + all_entries // 2)  # about half fit
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    for _ in range(2):
        assert reranker.score([(QUERY, d) for d in docs]) == pytest.approx(expected, abs=1e-6)
    fresh = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=redis_server.url)
    assert fresh.score([(QUERY, d) for d in docs]) == pytest.approx(expected, abs=1e-6)
    assert client.info("stats")["evicted_keys"] > 0
    assert 0 < len(fresh.store) < len(docs)
    assert fresh.counters.prefix_hits + fresh.counters.prefix_computations == len(docs)
    assert fresh.counters.prefix_computations > 0


def test_password_from_the_url_or_the_environment(tmp_path, tiny4_path, monkeypatch):
    from minirerank_integrations.testing import RedisServer

    server = RedisServer(tmp_path / "redis", password="s3cret-pw").start()
    try:
        docs = documents(1)
        with_url = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=server.url)
        with_url.score([(QUERY, d) for d in docs])
        assert with_url.store.back.stats.writes == len(docs)
        assert "s3cret-pw" not in repr(with_url.store)
        bare = f"redis://127.0.0.1:{server.port}/0"
        monkeypatch.setenv("MINIRERANK_REDIS_PASSWORD", "s3cret-pw")
        from_env = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=bare)
        from_env.score([(QUERY, d) for d in docs])
        assert from_env.counters.prefix_hits == len(docs)
        monkeypatch.setenv("MINIRERANK_REDIS_PASSWORD", "wrong")
        with pytest.warns(RuntimeWarning, match="cannot be reached"):
            wrong = MiniReranker.from_pretrained(tiny4_path, config="paper", cache_url=bare)
            assert wrong.score([(QUERY, d) for d in docs]) == pytest.approx(with_url.score([(QUERY, d) for d in docs]))
    finally:
        server.stop()


def test_open_store_picks_the_backend_from_the_url(tmp_path):
    assert isinstance(open_store(None), MemoryPrefixStore)
    on_disk = open_store(tmp_path / "dir")
    assert isinstance(on_disk, TieredPrefixStore) and type(on_disk.back).__name__ == "DiskPrefixStore"
    assert type(open_store(tmp_path / "bare", memory_limit=0)).__name__ == "DiskPrefixStore"
    shared = open_store("rediss://:pw@cache.example:6380/2", local_dir=tmp_path / "local")
    assert [type(t).__name__ for t in shared.tiers] == ["MemoryPrefixStore", "DiskPrefixStore", "RedisPrefixStore"]
    assert "pw" not in repr(shared)
    with pytest.raises(ConfigError, match="unknown URL scheme"):
        open_store("s3://bucket/prefixes")
    with pytest.raises(ConfigError, match="maxmemory"):
        open_store("redis://127.0.0.1:6379/0", size_limit=10)
    with pytest.raises(ConfigError, match="cache_dir.*cache_url"):  # not both
        MiniReranker.from_pretrained(cache_dir=tmp_path / "x", cache_url="redis://127.0.0.1:1/0")


def test_an_entry_the_precision_cannot_hold_is_served_not_stored(redis_server):
    import torch

    store = RedisPrefixStore(redis_server.url, storage="float16")
    keys = torch.full((1, 2, 3, 4), 1e6)  # beyond float16's range
    entry = PrefixEntry(keys=keys, values=keys.clone(), length=3, next_position=3)
    with pytest.warns(RuntimeWarning, match="cannot be stored as float16"):
        store.put("a" * 64, entry)
    assert (store.stats.writes, store.stats.unstorable, len(store)) == (0, 1, 0)


def _tiny_entry(seed: int) -> PrefixEntry:
    import torch

    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(1, 2, 3, 4, generator=generator)
    return PrefixEntry(keys=keys, values=keys * 2, length=3, next_position=3 + seed)


#: Namespace pairs whose names a glob or a `:prefix:` inside a namespace could confuse (issue 29, item 5).
NAMESPACE_PAIRS = [
    ("team?", "teamA"),
    ("cache[1]", "cache1"),
    ("a*", "ab"),
    ("x\\y", "x\\\\y"),
    ("[!a]", "b"),
    ("a", "a:prefix:b"),
    ("a:prefix:b", "a:prefix:b:prefix:c"),
    ("n:prefix:", "n"),
]


@pytest.mark.parametrize(("one", "other"), NAMESPACE_PAIRS)
def test_namespaces_never_reach_each_others_keys(redis_server, one, other):
    stores = {ns: RedisPrefixStore(redis_server.url, namespace=ns) for ns in (one, other)}
    # Each namespace holds keys of its own, one key both hold, and a key that spells another's name.
    keys = {
        one: ["1" * 64, "same", "b:prefix:" + "2" * 64],
        other: ["3" * 64, "same", "c:prefix:x", "x%3Ay"],
    }
    for seed, (ns, names) in enumerate(keys.items()):
        for i, key in enumerate(names):
            stores[ns].put(key, _tiny_entry(10 * seed + i))
    for first, second in ((one, other), (other, one)):
        assert len(stores[first]) == len(keys[first]) and len(stores[second]) == len(keys[second])
        for seed, ns in enumerate((one, other)):
            got = stores[ns].get_many(keys[ns])
            assert [g.next_position for g in got] == [3 + 10 * seed + i for i in range(len(keys[ns]))]
    before = (stores[other].stats.hits, stores[other].stats.misses, stores[other].stats.writes)
    assert stores[one].clear() == len(keys[one])
    assert len(stores[one]) == 0 and stores[one].get_many(keys[one]) == [None] * len(keys[one])
    assert (stores[other].stats.hits, stores[other].stats.misses, stores[other].stats.writes) == before
    assert len(stores[other]) == len(keys[other])
    assert all(entry is not None for entry in stores[other].get_many(keys[other]))
    assert stores[other].clear() == len(keys[other]) and redis_server.client().dbsize() == 0


def test_hex_keys_keep_their_names_on_the_server(redis_server):
    store = RedisPrefixStore(redis_server.url, namespace="team?")
    store.put("ab" * 32, _tiny_entry(1))
    store.put("odd:key%", _tiny_entry(2))
    names = [b"team?:prefix:" + b"ab" * 32 + b".float32", b"team?:prefix:odd%3Akey%25.float32"]  # key.precision
    assert sorted(redis_server.client().keys("*")) == names
    assert store.get("odd:key%").next_position == 5  # the codec binds the original key


@pytest.mark.parametrize("ttl", [float("inf"), float("nan"), 0, -1.0, 1e300, True, "60"])
def test_a_ttl_redis_cannot_take_is_refused_when_the_store_is_made(redis_server, tiny4_path, ttl):
    with pytest.raises(ConfigError, match="ttl"):
        RedisPrefixStore(redis_server.url, ttl=ttl)
    with pytest.raises(ConfigError, match="ttl"):
        open_store(redis_server.url, ttl=ttl)
    with pytest.raises(ConfigError, match="ttl"):  # at load, before any call
        MiniReranker.from_pretrained(tiny4_path, cache_url=redis_server.url, cache_ttl=ttl)


def test_the_longest_ttl_is_one_redis_takes(redis_server):
    from minirerank_integrations.store import MAX_TTL_SECONDS

    for ttl in (MAX_TTL_SECONDS, 1e-6):
        store = RedisPrefixStore(redis_server.url, namespace=f"ttl{ttl:g}", ttl=ttl)
        store.put("a" * 64, _tiny_entry(0))
        assert store.stats.writes == 1 and store.stats.write_failures == 0
    assert redis_server.client().pttl(f"ttl{MAX_TTL_SECONDS:g}:prefix:" + "a" * 64 + ".float32") > 2**52


def test_a_write_the_server_refuses_is_a_warning_not_a_failed_call(redis_server, tiny4_path, caplog):
    docs = documents(3)
    client = redis_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # every SET is refused: "command not allowed when used memory > maxmemory"
    reranker = MiniReranker.from_pretrained(
        tiny4_path, config="paper", cache_url=redis_server.url, cache_memory_limit=0
    )
    with caplog.at_level("WARNING", logger="minirerank_integrations.store.redis"):
        scores = reranker.score([(QUERY, d) for d in docs])
    assert scores == pytest.approx(uncached(tiny4_path, docs), abs=1e-6)
    assert reranker.store.stats.write_failures == len(docs) and reranker.store.stats.writes == 0
    assert reranker.store.available  # an answer, not an outage: no backoff
    assert any("refused writing a prefix" in r.getMessage() and "maxmemory" in r.getMessage() for r in caplog.records)


def test_int8_and_float32_stores_share_a_namespace(redis_server):
    exact = RedisPrefixStore(redis_server.url, namespace="shared")
    compact = RedisPrefixStore(redis_server.url, namespace="shared", storage="int8")
    entry = _tiny_entry(3)
    exact.put("c" * 64, entry)
    compact.put("c" * 64, entry)
    compact.put("d" * 64, entry)
    for _ in range(3):  # rounds of reads by both: neither refuses nor deletes the other's entries
        assert exact.get("c" * 64) is not None and compact.get("c" * 64) is not None
    assert "d" * 64 in compact and "d" * 64 not in exact and exact.get("d" * 64) is None
    assert exact.stats.rejected == 0 and compact.stats.rejected == 0
    assert len(exact) == 3


def test_len_and_clear_of_an_unreachable_server_are_zero_not_errors():
    store = RedisPrefixStore(f"redis://127.0.0.1:{free_port()}/0", namespace="gone")
    with pytest.warns(RuntimeWarning, match="cannot be reached"):
        assert len(store) == 0
    assert store.clear() == 0 and store.get("a" * 64) is None  # in the backoff: no second warning
