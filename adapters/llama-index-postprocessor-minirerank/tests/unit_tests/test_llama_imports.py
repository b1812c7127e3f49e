"""The public surface: names, base classes and the namespace-package layout LlamaIndex integrations use."""

from pathlib import Path

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import TransformComponent

import llama_index.postprocessor.minirerank as package
from llama_index.postprocessor.minirerank import MiniRerank, MiniRerankPrecache


def test_all_is_pinned() -> None:
    assert package.__all__ == ["MiniRerank", "MiniRerankPrecache"]
    for name in package.__all__:
        assert getattr(package, name).__name__ == name


def test_classes() -> None:
    assert BaseNodePostprocessor in MiniRerank.__mro__
    assert TransformComponent in MiniRerankPrecache.__mro__
    assert MiniRerank.class_name() == "MiniRerank"
    assert MiniRerankPrecache.class_name() == "MiniRerankPrecache"


def test_namespace_layout() -> None:
    here = Path(package.__file__).parent
    assert (here / "base.py").is_file()
    # llama_index/ and llama_index/postprocessor/ are namespace packages shared with llama-index-core
    # and other integrations: an __init__.py in either would shadow them.
    assert not (here.parent / "__init__.py").exists()
    assert not (here.parent.parent / "__init__.py").exists()
