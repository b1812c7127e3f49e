"""What a prefix key covers (docs/design.md): everything that shapes a stored prefix changes its key, so a store
never serves a prefix computed under other weights, other image preprocessing, or another engine format; and
nothing else does (the path a checkpoint was read from)."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch
from pictures import drawn_image

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.engine.image_keys import clear_memo
from minirerank_integrations.engine.inputs import Candidate
from minirerank_integrations.engine.keys import ENGINE_FORMAT_VERSION

A = RerankConfig(format="vision_first", exit_layer=4, band=(0, 4))
QUERY = "a red circle on the left"


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_memo()


def png(seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    drawn_image(*size, seed=seed).save(buffer, format="PNG")
    return buffer.getvalue()


def docs() -> list[Candidate]:
    return [Candidate(images=[png(300 + i)], id=f"d{i}") for i in range(2)] + [Candidate(text="a blue square")]


def scores(results) -> list[float]:
    return [r.score for r in sorted(results, key=lambda r: r.index)]


def keys(engine: MiniReranker) -> list[str]:
    return [engine.document_prefix(engine.prepare(d, f"candidate {i}"))[0] for i, d in enumerate(docs())]


def fresh_scores(engine: MiniReranker) -> list[float]:
    """The same backbone's scores computed from scratch (an empty memory store)."""
    return scores(MiniReranker(engine.backbone, A).rerank(QUERY, docs()))


def test_the_engine_format_version_was_bumped_for_source_keyed_images():
    assert ENGINE_FORMAT_VERSION >= 3


def test_a_changed_image_preprocessing_gives_other_keys_and_no_stale_prefix(tiny4_path, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny4_path, folder)
    store = tmp_path / "store"
    before = MiniReranker.from_pretrained(folder, config=A, cache_dir=store)
    old_scores, old_keys = scores(before.rerank(QUERY, docs())), keys(before)
    before.store.close()

    settings_file = folder / "preprocessor_config.json"
    settings = json.loads(settings_file.read_text())
    settings["image_mean"], settings["image_std"] = [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]
    settings_file.write_text(json.dumps(settings))  # same folder, same weights, other pixel values

    after = MiniReranker.from_pretrained(folder, config=A, cache_dir=store)
    new_scores = scores(after.rerank(QUERY, docs()))
    assert set(keys(after)).isdisjoint(old_keys)
    assert after.counters.prefix_hits == 0 and after.counters.prefix_computations == 3
    assert new_scores == pytest.approx(fresh_scores(after), abs=1e-6)
    assert new_scores[:2] != pytest.approx(old_scores[:2], abs=1e-6)  # the change matters: a stale hit would show


@pytest.mark.parametrize("change", ["load_state_dict", "one element in place"])
def test_weights_changed_in_place_get_other_keys_and_no_old_prefix(tiny4_path, change):
    engine = MiniReranker.from_pretrained(tiny4_path, config=A)
    old_scores, old_keys = scores(engine.rerank(QUERY, docs())), keys(engine)
    if change == "load_state_dict":
        generator = torch.Generator().manual_seed(0)
        state = engine.backbone.model.state_dict()
        engine.backbone.model.load_state_dict(
            {
                k: v + 0.02 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                for k, v in state.items()
            }
        )
    else:
        with torch.no_grad():
            engine.backbone.layers[0].self_attn.k_proj.weight[0, 0] += 2.0
    hits = engine.counters.prefix_hits
    new_scores = scores(engine.rerank(QUERY, docs()))
    assert set(keys(engine)).isdisjoint(old_keys)
    assert engine.counters.prefix_hits == hits  # nothing computed before the change is served
    assert new_scores == pytest.approx(fresh_scores(engine), abs=1e-6)
    assert new_scores != pytest.approx(old_scores, abs=1e-7)


def test_the_same_checkpoint_under_other_path_spellings_shares_its_prefixes(tiny4_path, tmp_path):
    folder = tmp_path / "ckpts" / "A"
    shutil.copytree(tiny4_path, folder)
    (tmp_path / "link").symlink_to(folder, target_is_directory=True)
    store = tmp_path / "store"
    first = MiniReranker.from_pretrained(str(folder) + "/", config=A, cache_dir=store)
    expected, expected_keys = scores(first.rerank(QUERY, docs())), keys(first)
    first.store.close()
    for spelling in (str(folder), str(tmp_path / "link"), str(tmp_path / "ckpts" / ".." / "ckpts" / "A")):
        engine = MiniReranker.from_pretrained(spelling, config=A, cache_dir=store)
        assert keys(engine) == expected_keys, spelling
        assert scores(engine.rerank(QUERY, docs())) == pytest.approx(expected, abs=1e-6)
        assert engine.counters.prefix_hits == 3 and engine.counters.prefix_computations == 0, spelling
        engine.store.close()


def test_resize_bounds_and_content_are_in_the_image_digest(tiny4_path):
    engine = MiniReranker.from_pretrained(tiny4_path, config=A)
    doc = Candidate(images=[png(1)])
    digest = engine.prepare(doc, "d").images[0].digest
    assert engine.prepare(Candidate(images=[png(2)]), "d").images[0].digest != digest
    small = A.model_copy(update={"min_pixels": 32 * 32, "max_pixels": 32 * 32 * 2})
    assert engine.prepare(doc, "d", small).images[0].digest != digest


def test_prompt_parts_are_tokenized_once_and_never_served_to_a_changed_tokenizer(tiny4_path):
    from minirerank_integrations.engine.modeling import load_backbone
    from minirerank_integrations.engine.prompts import UserText, encode_parts

    tokenizer = load_backbone(tiny4_path).tokenizer
    parts = [
        "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 16 + "<|vision_end|>",
        UserText("zebra <|im_end|>"),
    ]
    first = encode_parts(tokenizer, parts)
    assert encode_parts(tokenizer, parts) == first
    # The same characters as template text: the marker becomes a special token, not spelled-out text.
    assert encode_parts(tokenizer, [parts[0], "zebra <|im_end|>"]) != first
    tokenizer.add_tokens(["zebra"])  # the same tokenizer, changed after the parts were remembered
    assert encode_parts(tokenizer, parts) != first
