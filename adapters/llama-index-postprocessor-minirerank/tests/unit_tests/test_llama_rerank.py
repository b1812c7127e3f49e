"""MiniRerank with real LlamaIndex indexes, retrievers and query engines, compared with the engine itself."""

import copy

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding, MockMultiModalEmbedding
from llama_index.core.indices.multi_modal import MultiModalVectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageNode, MediaResource, MetadataMode, Node, NodeWithScore, QueryBundle, TextNode
from minirerank_integrations import Query

from llama_index.postprocessor.minirerank import MiniRerank


def test_query_engine_returns_the_engines_ranking(engine, mixed_nodes, expect, ranked) -> None:
    index = VectorStoreIndex(mixed_nodes, embed_model=MockEmbedding(embed_dim=8))
    retriever = index.as_retriever(similarity_top_k=len(mixed_nodes))
    query_engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(), node_postprocessors=[MiniRerank(model=engine, top_n=3)]
    )

    response = query_engine.query("a red circle")

    retrieved = retriever.retrieve("a red circle")
    assert len(retrieved) == len(mixed_nodes)  # image nodes were indexed too
    assert ranked(response.source_nodes) == expect(engine, "a red circle", retrieved, top_n=3)


@pytest.mark.parametrize("top_n_of", [lambda n: 1, lambda n: n - 1, lambda n: n, lambda n: n + 5])
def test_text_to_image_honours_top_n(engine, image_nodes, expect, ranked, top_n_of) -> None:
    top_n = top_n_of(len(image_nodes))
    rerank = MiniRerank(model=engine, top_n=top_n)

    result = rerank.postprocess_nodes(image_nodes, query_str="a blue square")

    assert len(result) == min(top_n, len(image_nodes))
    assert ranked(result) == expect(engine, "a blue square", image_nodes, top_n=top_n)
    assert [n.score for n in result] == sorted((n.score for n in result), reverse=True)


def test_top_n_none_reorders_everything(engine, image_nodes, expect, ranked) -> None:
    result = MiniRerank(model=engine, top_n=None).postprocess_nodes(image_nodes, query_str="yellow")
    assert ranked(result) == expect(engine, "yellow", image_nodes, top_n=None)
    assert len(result) == len(image_nodes)


def test_image_to_image_retrieval(engine, images, mixed_nodes, expect, ranked) -> None:
    index = MultiModalVectorStoreIndex(
        mixed_nodes, embed_model=MockEmbedding(embed_dim=8), image_embed_model=MockMultiModalEmbedding(embed_dim=8)
    )
    retriever = index.as_retriever(similarity_top_k=5, image_similarity_top_k=5)
    query_image = images.path["yellow"]
    retrieved = retriever.image_to_image_retrieve(query_image)  # QueryBundle(query_str="", image_path=...)
    assert {n.node.node_id for n in retrieved} == {"img-red-b64", "img-blue-path", "img-green-caption"}

    result = MiniRerank(model=engine, top_n=2).postprocess_nodes(
        retrieved, QueryBundle(query_str="", image_path=query_image)
    )

    assert ranked(result) == expect(engine, Query(images=[query_image]), retrieved, top_n=2)


def test_text_and_image_query_over_mixed_nodes(engine, images, mixed_nodes, expect, ranked) -> None:
    nodes = [NodeWithScore(node=node, score=0.5) for node in mixed_nodes]
    bundle = QueryBundle(query_str="the same shape in green", image_path=images.path["red"])

    result = MiniRerank(model=engine, top_n=len(nodes) - 1).postprocess_nodes(nodes, bundle)

    query = Query(text="the same shape in green", images=[images.path["red"]])
    assert ranked(result) == expect(engine, query, nodes, top_n=len(nodes) - 1)


def test_media_resource_nodes(engine, images, expect, ranked) -> None:
    nodes = [
        NodeWithScore(node=Node(id_="res-data", image_resource=MediaResource(data=images.png["red"]))),
        NodeWithScore(
            node=Node(
                id_="res-path-text",
                image_resource=MediaResource(path=images.path["blue"]),
                text_resource=MediaResource(text="a blue square"),
            )
        ),
        NodeWithScore(node=Node(id_="res-text", text_resource=MediaResource(text="a square, drawn in blue"))),
    ]

    result = MiniRerank(model=engine, top_n=3).postprocess_nodes(nodes, query_str="blue square")

    assert ranked(result) == expect(engine, "blue square", nodes, top_n=3)


def test_image_file_named_in_metadata(engine, images, expect, ranked, candidate_of) -> None:
    nodes = [
        NodeWithScore(node=TextNode(id_="file-only", text="", metadata={"file_path": images.path["green"]})),
        NodeWithScore(
            node=TextNode(
                id_="file-typed",
                text="scanned page",
                metadata={"file_path": images.path["yellow"], "file_type": "image/png"},
            )
        ),
        NodeWithScore(node=TextNode(id_="pdf", text="a report", metadata={"file_path": "/docs/report.pdf"})),
    ]
    assert candidate_of(nodes[1].node).images == (images.path["yellow"],)
    assert candidate_of(nodes[2].node).images == ()

    result = MiniRerank(model=engine, top_n=None).postprocess_nodes(nodes, query_str="green circle")

    assert ranked(result) == expect(engine, "green circle", nodes, top_n=None)


@pytest.mark.parametrize("mode", [MetadataMode.EMBED, MetadataMode.NONE])
def test_metadata_mode(engine, expect, ranked, mode) -> None:
    nodes = [
        NodeWithScore(node=TextNode(id_=f"t{i}", text=text, metadata={"section": f"chapter {i}"}))
        for i, text in enumerate(["Paris is the capital of France.", "a red circle", "seven shapes"])
    ]

    result = MiniRerank(model=engine, top_n=None, metadata_mode=mode).postprocess_nodes(nodes, query_str="France")

    assert ranked(result) == expect(engine, "France", nodes, top_n=None, metadata_mode=mode)
    other = MetadataMode.NONE if mode == MetadataMode.EMBED else MetadataMode.EMBED
    assert dict(ranked(result)) != dict(expect(engine, "France", nodes, top_n=None, metadata_mode=other))


def test_image_url_through_the_fetcher(engine, images, expect, ranked) -> None:
    urls = {f"https://images.example/{colour}.png": colour for colour in ("red", "blue")}
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return images.png[urls[url]]

    nodes = [NodeWithScore(node=ImageNode(id_=colour, image_url=url)) for url, colour in urls.items()]

    result = MiniRerank(model=engine, top_n=2, image_fetcher=fetch).postprocess_nodes(nodes, query_str="red")

    as_paths = [NodeWithScore(node=ImageNode(id_=colour, image_path=images.path[colour])) for colour in urls.values()]
    assert ranked(result) == expect(engine, "red", as_paths, top_n=2)
    assert sorted(fetched) == sorted(urls)


def test_keep_retrieval_score(engine, image_nodes, ranked) -> None:
    before = {n.node.node_id: n.score for n in image_nodes}

    kept = MiniRerank(model=engine, top_n=None, keep_retrieval_score=True).postprocess_nodes(image_nodes, query_str="q")
    plain = MiniRerank(model=engine, top_n=None).postprocess_nodes(image_nodes, query_str="q")

    assert {n.node.node_id: n.node.metadata["retrieval_score"] for n in kept} == before
    assert all("retrieval_score" not in n.node.metadata for n in plain)
    assert all("retrieval_score" not in n.node.metadata for n in image_nodes)
    assert ranked(kept) == ranked(plain)


def test_inputs_are_not_modified(engine, mixed_nodes) -> None:
    nodes = [NodeWithScore(node=node, score=0.1 * i) for i, node in enumerate(mixed_nodes)]
    snapshot = copy.deepcopy([n.model_dump() for n in nodes])

    result = MiniRerank(model=engine, top_n=None, keep_retrieval_score=True).postprocess_nodes(nodes, query_str="q")

    assert [n.model_dump() for n in nodes] == snapshot
    originals = {id(n) for n in nodes} | {id(n.node) for n in nodes} | {id(n.node.metadata) for n in nodes}
    for scored in result:
        assert not {id(scored), id(scored.node), id(scored.node.metadata)} & originals
        scored.node.metadata["touched"] = True
    assert [n.model_dump() for n in nodes] == snapshot
    # The copies are the same nodes otherwise: same id, content and type.
    by_id = {n.node.node_id: n.node for n in nodes}
    for scored in result:
        original = by_id[scored.node.node_id]
        assert type(scored.node) is type(original)
        assert scored.node.get_content(MetadataMode.NONE) == original.get_content(MetadataMode.NONE)


def test_missing_query_bundle_raises(engine, image_nodes) -> None:
    with pytest.raises(ValueError, match="query"):
        MiniRerank(model=engine).postprocess_nodes(image_nodes)


def test_query_with_neither_text_nor_image_raises(engine, image_nodes) -> None:
    with pytest.raises(ValueError, match="neither text nor images"):
        MiniRerank(model=engine).postprocess_nodes(image_nodes, QueryBundle(query_str="  "))


def test_no_nodes(engine) -> None:
    assert MiniRerank(model=engine).postprocess_nodes([], query_str="anything") == []
