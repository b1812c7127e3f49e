"""A folder written by ``minirerank adapt`` loads through ``MiniRerankCompressor(model=folder)`` with its saved
configuration and the base checkpoint as pruning embedder, and compresses like the engine loaded directly."""

from __future__ import annotations

from minirerank_integrations import MiniReranker, RerankConfig
from minirerank_integrations.quality.adapt import AdaptSettings, adapt
from minirerank_integrations.quality.data import generate

from langchain_minirerank import MiniRerankCompressor

TARGET = RerankConfig(format="vision_first", exit_layer=2, band=(0, 1), keep_ratio=0.5)


def test_adapted_folder_loads_with_its_configuration(tiny_path, tmp_path, documents, candidates_by_id) -> None:
    groups = generate("text_to_image", "train", 2, seed=0, candidates_per_query=4, image_size=64)
    settings = AdaptSettings(steps=1, queries_per_step=2, group_size=4, lr=1e-2)
    adapt(tiny_path, groups, TARGET, tmp_path, settings, progress=False)
    compressor = MiniRerankCompressor(model=str(tmp_path), top_n=len(documents))
    direct = MiniReranker.from_pretrained(tmp_path)
    assert compressor.reranker.config == direct.config == TARGET.resolve(direct.num_layers)
    assert compressor.reranker.embedder.fingerprint() == MiniReranker.from_pretrained(tiny_path).backbone.fingerprint()
    kept = compressor.compress_documents(documents, "a red circle")
    results = direct.rerank("a red circle", [candidates_by_id[d.id] for d in documents])
    assert [d.id for d in kept] == [documents[r.index].id for r in results]
