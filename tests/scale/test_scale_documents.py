"""Document lists read into candidates: files, folders, and JSONL in our, LlamaIndex's and LangChain's shapes."""

from __future__ import annotations

import base64
import io
import json

import pytest
from langchain_core.documents import Document
from langchain_core.load import dumpd
from llama_index.core.schema import ImageNode, TextNode
from pictures import drawn_image

from minirerank_integrations import Candidate, InputError
from minirerank_integrations.scale import read_documents


def test_files_folders_and_the_three_jsonl_shapes(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    for i in range(2):
        drawn_image(48, 48, seed=i).save(pages / f"p{i}.png")
    (pages / "note.txt").write_text("a text file", encoding="utf-8")
    (pages / "ignored.csv").write_text("x", encoding="utf-8")
    buffer = io.BytesIO()
    drawn_image(32, 32, seed=9).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    lines = [
        {"id": "ours", "text": "caption", "image": "pages/p0.png"},  # relative to the JSONL's folder
        ImageNode(image=encoded, text="", id_="llama-image").to_dict(),
        TextNode(text="a llama text", id_="llama-text").to_dict(),
        Document(page_content="a chain text", metadata={"image_path": str(pages / "p1.png")}, id="lc").model_dump(),
        dumpd(Document(page_content="dumped", id="lc-dumpd")),
    ]
    dump = tmp_path / "dump.jsonl"
    dump.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")

    docs = read_documents([pages, dump])
    assert [d.id for d in docs] == [
        str(pages / "note.txt"),
        str(pages / "p0.png"),
        str(pages / "p1.png"),
        "ours",
        "llama-image",
        "llama-text",
        "lc",
        "lc-dumpd",
    ]
    assert docs[0].text == "a text file" and docs[1].images == (str(pages / "p0.png"),)
    assert docs[3].text == "caption" and docs[3].images == (str(tmp_path / "pages" / "p0.png"),)
    # The image as the LlamaIndex postprocessor sends it (a data URI): the same text, hence the same prefix key.
    assert docs[4].images == (f"data:image/*;base64,{encoded}",) and docs[4].text is None
    assert docs[5].text == "a llama text" and not docs[5].images
    assert docs[6].text == "a chain text" and docs[6].images == (str(pages / "p1.png"),)
    assert docs[7].text == "dumped"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "text": "ok"}\nnot json\n', r"dump.jsonl:2: not a JSON object"),
        ('["a list"]\n', r"dump.jsonl:1: a document must be a JSON object"),
        ('{"id": "a"}\n', r"dump.jsonl:1: the document has neither text nor images"),
        ('{"txt": "typo"}\n', r"dump.jsonl:1: unknown fields \['txt'\]"),
    ],
)
def test_bad_jsonl_names_the_file_and_line(tmp_path, content, message):
    (tmp_path / "dump.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_documents([tmp_path / "dump.jsonl"])


def test_missing_paths_and_unknown_types_are_named(tmp_path):
    with pytest.raises(InputError, match="nowhere: no such file or folder"):
        read_documents([tmp_path / "nowhere"])
    (tmp_path / "table.csv").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match=r"table.csv: unknown document file type '.csv'"):
        read_documents([tmp_path / "table.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image, text, PDF or JSONL files"):
        read_documents([tmp_path / "empty"])


def test_a_pdf_in_a_folder_is_one_document_per_page(tmp_path, tiny4_path):
    from PIL import Image

    from minirerank_integrations import MiniReranker, PdfPage
    from minirerank_integrations.testing import write_pdf

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    pages = [Image.new("RGB", (96, 96), colour) for colour in colours]
    path = write_pdf(tmp_path / "report.pdf", pages)
    documents = read_documents([tmp_path])
    assert [d.id for d in documents] == [f"{path}#page={n}" for n in (1, 2, 3)]
    assert all(isinstance(image, str) for d in documents for image in d.images)  # ships to Ray workers by value
    reranker = MiniReranker.from_pretrained(tiny4_path, config="paper")
    by_name = reranker.score([("a page", d) for d in documents])
    by_page = reranker.score([("a page", Candidate(images=[PdfPage(path, index=i)])) for i in range(3)])
    assert by_name == pytest.approx(by_page, abs=1e-6)
    assert len(set(by_name)) == 3  # three different pages, not one page three times


def _encrypted_pdf(path, source):
    import pypdf  # a dependency of the LlamaIndex adapter's PDF reader

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(source))
    writer.encrypt(user_password="secret", algorithm="RC4-128")  # RC4 needs no crypto library
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def test_an_unreadable_document_file_keeps_its_place_and_the_rest_are_read(tmp_path):
    import os

    from PIL import Image
    from special_files import returns_within

    from minirerank_integrations.scale.documents import UnreadableDocument, read_corpus
    from minirerank_integrations.testing import write_pdf

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("a note about circles", encoding="utf-8")
    (folder / "b.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))  # not UTF-8
    plain = write_pdf(tmp_path / "plain.pdf", [Image.new("RGB", (96, 96), (200, 30, 30))])
    _encrypted_pdf(folder / "c.pdf", plain)
    (folder / "d.pdf").write_bytes(b"%PDF-1.4 broken")
    os.mkfifo(folder / "e.txt")  # would block a reader
    drawn_image(48, 48, seed=2).save(folder / "f.png")

    corpus = returns_within(10, read_corpus, [folder])
    assert [type(d).__name__ for d in corpus] == [
        "Candidate",
        "UnreadableDocument",
        "UnreadableDocument",
        "UnreadableDocument",
        "UnreadableDocument",
        "Candidate",
    ]
    assert [d.id for d in corpus] == [
        str(folder / name) for name in ("a.txt", "b.txt", "c.pdf", "d.pdf", "e.txt", "f.png")
    ]
    reasons = [str(d.error) for d in corpus if isinstance(d, UnreadableDocument)]
    assert "not UTF-8 text" in reasons[0] and "b.txt" in reasons[0]
    assert "Incorrect password" in reasons[1] and "c.pdf" in reasons[1]
    assert "not a readable PDF" in reasons[2] and "d.pdf" in reasons[2]
    assert "not a regular file" in reasons[3] and "e.txt" in reasons[3]
    with pytest.raises(InputError, match="b.txt: not UTF-8 text"):
        read_documents([folder])  # the strict reader raises the first one


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"id": "a", "images": "abc"}', '"images" must be a list .*got str; one image goes in "image"'),
        (b'{"id": "a", "images": {"x.png": 1}}', '"images" must be a list .*got dict'),
        (b'{"id": "a", "image": 5, "text": "x"}', "images must be non-empty strings .*got int"),
        (b'{"id": "a", "images": [null], "text": "x"}', "images must be non-empty strings .*got NoneType"),
        (b'{"id": "a", "text": 5}', "text must be a string, got int"),
        (b'{"id": ["a"], "text": "x"}', "id must be a string or an integer, got list"),
        (b'{"page_content": 5}', "not a LangChain Document: page_content: Input should be a valid string"),
        (b'{"page_content": "x", "metadata": "m"}', "not a LangChain Document: metadata: Input should be a valid dict"),
        (b'{"id_": "n", "text": "x", "metadata": []}', "not a LlamaIndex node: metadata: Input should be a valid dict"),
        (
            b'{"lc": 1, "type": "constructor", "id": ["x", "Prompt"], "kwargs": {}}',
            r"a LangChain dump of \['x', 'Prompt'\], not of a Document",
        ),
        (b'{"id_": "n", "class_name": "Pipeline"}', "class_name 'Pipeline' is not a LlamaIndex node class"),
        (b'{"id": "a", "text": "caf\xe9"}', r"not UTF-8 text \(invalid continuation byte at byte \d+\)"),
        (b"[" * 100_000, "not a JSON object"),
    ],
)
def test_wrong_types_in_a_dump_are_input_errors_naming_the_line(tmp_path, line, message):
    (tmp_path / "dump.jsonl").write_bytes(b'{"id": "ok", "text": "fine"}\n' + line + b"\n")
    with pytest.raises(InputError, match=rf"dump.jsonl:2: {message}"):
        read_documents([tmp_path / "dump.jsonl"])


def test_adapt_documents_are_read_by_the_same_reader(tmp_path):
    from PIL import Image

    from minirerank_integrations.quality.data import load_documents
    from minirerank_integrations.testing import write_pdf

    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    drawn_image(48, 48, seed=1).save(folder / "sub" / "a.png")
    (folder / "b.md").write_text("a note", encoding="utf-8")
    write_pdf(folder / "c.pdf", [Image.new("RGB", (96, 96), (200, 30, 30))] * 2)
    documents = load_documents(folder)
    # Ids are paths within the folder; the candidates are the ones minirerank precache reads.
    assert list(documents) == ["b.md", "c.pdf#page=1", "c.pdf#page=2", "sub/a.png"]
    read = read_documents([folder])
    assert [(d.text, d.images) for d in documents.values()] == [(d.text, d.images) for d in read]

    dump = tmp_path / "docs.jsonl"
    dump.write_text('{"id": "x", "image": "docs/sub/a.png"}\n{"text": "no id"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"docs.jsonl:2: the document has no id"):
        load_documents(dump)
    dump.write_text('{"id": "x", "image": "docs/sub/a.png"}\n{"id": "x", "text": "again"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="document id 'x' already used"):
        load_documents(dump)


def test_a_text_or_jsonl_file_over_the_cap_is_one_bad_document_naming_it(tmp_path):
    from minirerank_integrations.engine.documents import MAX_DOCUMENT_FILE_BYTES
    from minirerank_integrations.errors import ConfigError
    from minirerank_integrations.scale.documents import UnreadableDocument, read_corpus

    assert MAX_DOCUMENT_FILE_BYTES == 256 * 2**20  # as an image file's cap
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("short", encoding="utf-8")  # 5 bytes
    (folder / "b.txt").write_text("a note about circles, squares and triangles", encoding="utf-8")  # 43 bytes
    (folder / "c.jsonl").write_text(json.dumps({"id": "x", "text": "a long enough line of text"}) + "\n")
    corpus = read_corpus([folder], max_file_bytes=32)
    assert isinstance(corpus[0], Candidate) and corpus[0].text == "short"
    for bad, name in ((corpus[1], "b.txt"), (corpus[2], "c.jsonl")):
        assert isinstance(bad, UnreadableDocument) and bad.id == str(folder / name)
        assert isinstance(bad.error, InputError)
        assert str(bad.error).startswith(f"{folder / name}: ") and "over the 32-byte cap" in str(bad.error)
    assert [d.id for d in read_corpus([folder])] == [str(folder / n) for n in ("a.txt", "b.txt")] + ["x"]
    with pytest.raises(InputError, match="b.txt: 43 bytes, over the 32-byte cap"):
        read_documents([folder], max_file_bytes=32)
    for cap in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="max_file_bytes"):
            read_corpus([folder], max_file_bytes=cap)
