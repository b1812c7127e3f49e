"""A folder written by ``minirerank adapt`` loads through ``MiniRerank(model=folder)`` with its saved
configuration and the base checkpoint as pruning embedder, and ranks like the engine loaded directly."""

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.quality.adapt import AdaptSettings, adapt
from minirerank_integrations.quality.data import generate

from llama_index.postprocessor.minirerank import MiniRerank

TARGET = RerankConfig(format="vision_first", exit_layer=2, band=(0, 1), keep_ratio=0.5)


def test_adapted_folder_loads_with_its_configuration(tiny_path, tmp_path, image_nodes, expect, ranked) -> None:
    groups = generate("text_to_image", "train", 2, seed=0, candidates_per_query=4, image_size=64)
    settings = AdaptSettings(steps=1, queries_per_step=2, group_size=4, lr=1e-2)
    adapt(tiny_path, groups, TARGET, tmp_path, settings, progress=False)
    rerank = MiniRerank(model=str(tmp_path), top_n=None)
    direct = MiniReranker.from_pretrained(tmp_path)
    assert rerank.engine.config == direct.config == TARGET.resolve(direct.num_layers)
    assert rerank.engine.embedder.fingerprint() == MiniReranker.from_pretrained(tiny_path).backbone.fingerprint()
    result = rerank.postprocess_nodes(image_nodes, query_str="a red circle")
    assert ranked(result) == expect(direct, "a red circle", image_nodes, None)
