from langchain_minirerank import __all__

EXPECTED_ALL = ["MiniRerankCompressor", "MiniRerankRetriever", "RerankInput", "__version__"]


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(__all__)
