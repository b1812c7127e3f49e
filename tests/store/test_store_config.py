"""``StoreConfig``: the prefix store's settings as one validated model; every bad value or type is a
``ConfigError`` naming the setting, never a ``TypeError`` or ``AttributeError`` from deeper down."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from minirerank_integrations import ConfigError, StoreConfig
from minirerank_integrations.store import (
    MAX_TTL_SECONDS,
    DiskPrefixStore,
    MemoryPrefixStore,
    RedisPrefixStore,
    TieredPrefixStore,
    open_store,
)

REDIS = "redis://127.0.0.1:6379/0"


def test_every_field_is_described_and_numbers_name_their_unit() -> None:
    fields = StoreConfig.model_fields
    assert set(fields) == {
        "dir",
        "url",
        "namespace",
        "storage",
        "size_limit",
        "ttl",
        "memory_limit",
        "local_dir",
        "write_behind",
    }
    for name, field in fields.items():
        assert field.description and len(field.description) > 20, name
    for name, unit in {"size_limit": "Bytes", "memory_limit": "Bytes", "ttl": "seconds"}.items():
        assert unit in (fields[name].description or ""), name


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"dir": 123}, "dir"),
        ({"dir": ["a"]}, "dir"),
        ({"dir": "  "}, "dir"),
        ({"dir": "redis://host:6379/0"}, "dir"),
        ({"url": REDIS, "local_dir": 1.5}, "local_dir"),
        ({"url": 6379}, "url"),
        ({"url": "ftp://host/x"}, "url"),
        ({"url": "redis://host:99999/0"}, "url"),
        ({"url": "redis://host:port/0"}, "url"),
        ({"url": "redis://[::1"}, "url"),
        ({"url": "redis://host:6379/zero"}, "url"),
        ({"url": "redis:///0"}, "url"),
        ({"url": REDIS, "namespace": 5}, "namespace"),
        ({"url": REDIS, "namespace": ""}, "namespace"),
        ({"url": REDIS, "namespace": "two words"}, "namespace"),
        ({"storage": "int4"}, "storage"),
        ({"storage": "float64"}, "storage"),
        ({"size_limit": "10"}, "size_limit"),
        ({"size_limit": True}, "size_limit"),
        ({"size_limit": 0}, "size_limit"),
        ({"size_limit": 1.5}, "size_limit"),
        ({"memory_limit": "abc"}, "memory_limit"),
        ({"memory_limit": -1}, "memory_limit"),
        ({"url": REDIS, "ttl": "60"}, "ttl"),
        ({"url": REDIS, "ttl": math.inf}, "ttl"),
        ({"url": REDIS, "ttl": math.nan}, "ttl"),
        ({"url": REDIS, "ttl": 0}, "ttl"),
        ({"url": REDIS, "ttl": -5.0}, "ttl"),
        ({"url": REDIS, "ttl": MAX_TTL_SECONDS + 1}, "ttl"),
        ({"url": REDIS, "ttl": True}, "ttl"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_value_or_type_is_a_config_error_naming_the_setting(settings: dict, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        StoreConfig(**settings)
    assert f"{named}:" in str(raised.value) or f"{named} " in str(raised.value)
    with pytest.raises(ConfigError) as again:  # a dict, as a framework's from_dict hands it back
        StoreConfig.model_validate(settings)
    assert str(again.value) == str(raised.value)
    flat = {f"cache_{key}": value for key, value in settings.items()}
    if named == "colour":
        with pytest.raises(ConfigError, match="unknown store option cache_colour"):
            StoreConfig.from_options(**flat)
    elif None not in settings.values():  # (from_options reads None as "the default")
        # from_pretrained's spelling is the one the message names
        with pytest.raises(ConfigError, match=f"cache_{named}"):
            StoreConfig.from_options(**flat)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"dir": "d", "url": REDIS}, "exclusive"),
        ({"local_dir": "d"}, "tier in front of a Redis store"),
        ({"dir": "d", "ttl": 60}, "applies to a Redis store"),
        ({"url": REDIS, "size_limit": 2**30}, "maxmemory"),
    ],
)
def test_settings_that_do_not_go_together(settings: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        StoreConfig(**settings)


def test_a_password_never_shows(tmp_path: Path) -> None:
    config = StoreConfig(url="redis://:s3cret@host:6379/0", ttl=60)
    assert "s3cret" not in repr(config) and "s3cret" not in str(config)
    for bad in ("redis://:s3cret@host:99999/0", "redis://:s3cret@[::1/0", "redis://:s3cret@host:6379/x"):
        with pytest.raises(ConfigError) as raised:
            StoreConfig(url=bad)
        assert "s3cret" not in str(raised.value) and "***" in str(raised.value)


def test_round_trips_as_a_dict_and_as_json(tmp_path: Path) -> None:
    config = StoreConfig(url="rediss://host:6380/2", namespace="team?", storage="int8", ttl=3600, local_dir=tmp_path)
    assert config.local_dir == str(tmp_path)  # an os.PathLike is kept as its path
    assert StoreConfig.model_validate(config.model_dump()) == config
    assert StoreConfig.model_validate_json(config.model_dump_json()) == config
    assert StoreConfig.model_validate(config) is config
    assert config.kind == "redis" and StoreConfig(dir=tmp_path).kind == "directory" and StoreConfig().kind == "memory"
    with pytest.raises(ConfigError, match="StoreConfig or a dict"):
        StoreConfig.model_validate("redis://host")


def test_from_options_reads_the_flat_keywords_and_changes_a_base() -> None:
    config = StoreConfig.from_options(cache_url=REDIS, cache_ttl=60, cache_storage="int8", cache_namespace=None)
    assert (config.url, config.ttl, config.storage, config.namespace) == (REDIS, 60.0, "int8", "minirerank")
    assert config.model_dump(exclude_defaults=True) == {"url": REDIS, "ttl": 60.0, "storage": "int8"}
    assert StoreConfig.from_options(**config.model_dump()) == config
    changed = StoreConfig.from_options(store={"url": REDIS, "ttl": 5}, memory_limit=0)
    assert (changed.ttl, changed.memory_limit) == (5.0, 0)
    assert StoreConfig.from_options() == StoreConfig()


def test_open_store_opens_what_the_config_describes(tmp_path: Path) -> None:
    assert isinstance(open_store(StoreConfig()), MemoryPrefixStore)
    assert open_store(StoreConfig(size_limit=1000)).size_limit == 1000
    bare = open_store(StoreConfig(dir=tmp_path / "a", storage="int8", size_limit=2**20, memory_limit=0))
    assert isinstance(bare, DiskPrefixStore) and (bare.storage, bare.size_limit) == ("int8", 2**20)
    tiered = open_store({"url": "redis://:pw@127.0.0.1:1/0", "local_dir": str(tmp_path / "l"), "namespace": "n"})
    assert isinstance(tiered, TieredPrefixStore)
    assert [type(t) for t in tiered.tiers] == [MemoryPrefixStore, DiskPrefixStore, RedisPrefixStore]
    assert (tiered.back.namespace, tiered.back.storage) == ("n", "float32")  # no storage given: float32
    with pytest.raises(ConfigError, match="inside the StoreConfig"):
        open_store(StoreConfig(), storage="int8")
    with pytest.raises(ConfigError, match="memory_limit"):
        open_store(tmp_path / "b", memory_limit="big")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="open_store takes"):
        open_store(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"cache_dir": 123}, "directory"),
        ({"cache_memory_limit": "abc"}, "memory_limit"),
        ({"cache_size_limit": "1GB"}, "size_limit"),
        ({"cache_url": "redis://127.0.0.1:99999/0"}, "url"),
        ({"cache_url": REDIS, "cache_ttl": math.inf}, "ttl"),
        ({"cache_url": REDIS, "cache_namespace": 5}, "namespace"),
        ({"cache_url": REDIS, "cache_local_dir": 3}, "local_dir"),
        ({"cache_storage": "int4"}, "storage"),
    ],
)
def test_from_pretrained_store_options_of_a_wrong_type_are_config_errors(
    tiny4_path: Path, options: dict, named: str
) -> None:
    from minirerank_integrations import MiniReranker

    with pytest.raises(ConfigError, match=named):
        MiniReranker.from_pretrained(tiny4_path, **options)


def test_the_settings_and_the_store_options_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from minirerank_integrations.store import StoreConfig, Storage\n"
        "import minirerank_integrations.cli._common, minirerank_integrations.cli.cache\n"
        "StoreConfig(url='redis://127.0.0.1:6379/0', storage='int8', ttl=60)\n"
        "print(sorted(m for m in ('torch', 'redis', 'diskcache') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
