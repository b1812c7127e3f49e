"""Image loading: every source kind, every failure (named in the message), bomb guard, resize rule, digest."""

from __future__ import annotations

import base64
import io
import math
import resource
import struct
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from minirerank_integrations.engine.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    MAX_SOURCE_PIXELS,
    describe_source,
    image_digest,
    load_image,
    prepare_image,
    smart_resize,
)
from minirerank_integrations.errors import ImageLoadError, InputError

RED = (200, 30, 40)


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _red_image(size: tuple[int, int] = (6, 4)) -> Image.Image:
    return Image.new("RGB", size, RED)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _blank_bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG; the zero rows compress to a few tens of KB even at 20000x20000."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    rows_per_chunk = 1000
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * min(rows_per_chunk, height - y)) for y in range(0, height, rows_per_chunk)]
    parts.append(compressor.flush())
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


@pytest.fixture
def red_png(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    path.write_bytes(_png_bytes(_red_image()))
    return path


def _assert_red(image: Image.Image, size: tuple[int, int] = (6, 4)) -> None:
    assert image.mode == "RGB"
    assert image.size == size
    assert image.getpixel((0, 0)) == RED


# --- every source kind decodes ------------------------------------------------------------------------


def test_path_str_path_object_and_file_uri(red_png: Path) -> None:
    _assert_red(load_image(str(red_png)))
    _assert_red(load_image(red_png))
    _assert_red(load_image(red_png.as_uri()))


def test_file_uri_with_escaped_characters(tmp_path: Path) -> None:
    path = tmp_path / "a b#1.png"
    path.write_bytes(_png_bytes(_red_image()))
    assert "%20" in path.as_uri()
    _assert_red(load_image(path.as_uri()))


def test_bytes_and_bytearray() -> None:
    data = _png_bytes(_red_image())
    _assert_red(load_image(data))
    _assert_red(load_image(bytearray(data)))


def test_pil_rgb_and_l_modes() -> None:
    _assert_red(load_image(_red_image()))
    grey = load_image(Image.new("L", (3, 3), 77))
    assert grey.mode == "RGB" and grey.getpixel((1, 1)) == (77, 77, 77)


def test_transparent_rgba_la_and_p_are_composited_on_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (*RED, 255))
    out = load_image(rgba)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == RED

    half = load_image(Image.new("RGBA", (1, 1), (0, 0, 0, 128)))
    assert all(126 <= c <= 128 for c in half.getpixel((0, 0)))

    la = load_image(Image.new("LA", (1, 1), (0, 0)))
    assert la.getpixel((0, 0)) == (255, 255, 255)

    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 0, *RED] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    out = load_image(pal)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == RED
    # The same through a PNG file keeps the tRNS chunk.
    assert load_image(_png_bytes(pal)).getpixel((0, 0)) == (255, 255, 255)


def test_opaque_palette_image_keeps_its_colours() -> None:
    pal = Image.new("P", (1, 1), 0)
    pal.putpalette([*RED] + [0] * 765)
    assert load_image(pal).getpixel((0, 0)) == RED


def test_caller_pil_image_is_not_mutated() -> None:
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    before = (rgba.mode, rgba.size, rgba.tobytes())
    out = load_image(rgba)
    assert out is not rgba
    assert (rgba.mode, rgba.size, rgba.tobytes()) == before

    rgb = _red_image()
    out = load_image(rgb)
    assert out is not rgb
    out.putpixel((0, 0), (0, 0, 0))
    assert rgb.getpixel((0, 0)) == RED


def test_plain_base64_and_wrapped_base64() -> None:
    encoded = base64.b64encode(_png_bytes(_red_image())).decode()
    _assert_red(load_image(encoded))
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"
    _assert_red(load_image(wrapped))


def test_base64_jpeg_starting_with_slash_is_not_taken_for_a_path() -> None:
    buf = io.BytesIO()
    _red_image((16, 16)).save(buf, format="JPEG", quality=95)
    encoded = base64.b64encode(buf.getvalue()).decode()
    assert encoded.startswith("/9j/")
    assert load_image(encoded).size == (16, 16)


def test_data_uri() -> None:
    encoded = base64.b64encode(_png_bytes(_red_image())).decode()
    _assert_red(load_image(f"data:image/png;base64,{encoded}"))


def test_url_goes_through_the_fetcher_with_the_url() -> None:
    calls: list[str] = []
    data = _png_bytes(_red_image())

    def fetcher(url: str) -> bytes:
        calls.append(url)
        return data

    url = "https://example.com/img/red.png?x=1"
    _assert_red(load_image(url, fetcher=fetcher))
    assert calls == [url]


def test_first_frame_of_a_multi_frame_gif() -> None:
    frames = [Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = load_image(buf.getvalue())
    assert out.mode == "RGB"
    r, g, b = out.getpixel((0, 0))
    assert r > 150 and b < 80


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (8, 4), RED)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (4, 8)


# --- every failure is an ImageLoadError naming the source -------------------------------------------------


def _load_error(source: object, **kwargs: object) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, InputError)
    return str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "cat.jpg"
    message = _load_error(str(missing))
    assert str(missing) in message and "no such file" in message
    assert str(missing) in _load_error(missing)
    assert "no such file" in _load_error("cat.png")
    assert "cat.png" in _load_error("cat.png")
    assert str(missing) in _load_error(missing.as_uri())


def test_corrupt_image_bytes(tmp_path: Path) -> None:
    corrupt = _png_bytes(_red_image())[:16] + b"\x07garbage" * 20
    message = _load_error(corrupt)
    assert f"<bytes {len(corrupt)}>" in message
    path = tmp_path / "corrupt.png"
    path.write_bytes(corrupt)
    assert str(path) in _load_error(path)


def test_truncated_image_data() -> None:
    data = _png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))
    message = _load_error(data[: len(data) // 2])
    assert f"<bytes {len(data) // 2}>" in message


def test_zero_byte_file_and_zero_length_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    message = _load_error(path)
    assert str(path) in message and "empty" in message
    message = _load_error(b"")
    assert "<bytes 0>" in message and "empty" in message


def test_non_image_base64() -> None:
    encoded = base64.b64encode(b"hello world").decode()
    message = _load_error(encoded)
    assert encoded in message
    assert "neither an existing file nor base64 image data" in message


def test_text_that_is_neither_a_file_nor_base64() -> None:
    message = _load_error("not an image!")
    assert "not an image!" in message and "neither an existing file nor base64" in message
    assert "empty" in _load_error("   ")


def test_long_base64_is_summarised_not_dumped() -> None:
    encoded = base64.b64encode(b"x" * 3000).decode()
    message = _load_error(encoded)
    assert f"<base64 {len(encoded)} chars>" in message
    assert encoded[:100] not in message


def test_data_uri_failures() -> None:
    payload = base64.b64encode(b"hello world").decode()
    message = _load_error(f"data:image/png;base64,{payload}")
    assert "<data URI image/png" in message
    assert "image type" in _load_error(f"data:text/plain;base64,{payload}")
    assert "base64" in _load_error("data:image/png,rawbytes")
    assert "not valid base64" in _load_error("data:image/png;base64,!!!")


def test_url_without_a_fetcher() -> None:
    url = "http://example.com/a.png"
    message = _load_error(url)
    assert url in message and "image_fetcher=" in message and "not fetched" in message


def test_fetcher_that_raises_is_chained() -> None:
    url = "https://example.com/a.png"
    boom = ConnectionError("connection refused")

    def fetcher(_: str) -> bytes:
        raise boom

    with pytest.raises(ImageLoadError) as info:
        load_image(url, fetcher=fetcher)
    assert info.value.__cause__ is boom
    assert url in str(info.value) and "connection refused" in str(info.value)


def test_fetcher_returning_garbage_or_non_bytes() -> None:
    url = "https://example.com/a.png"
    assert url in _load_error(url, fetcher=lambda _: b"<html>404</html>")
    assert "str" in _load_error(url, fetcher=lambda _: "not bytes")


def test_unsupported_url_scheme() -> None:
    message = _load_error("s3://bucket/key.png")
    assert "s3://bucket/key.png" in message and "scheme" in message


def test_unsupported_type() -> None:
    message = _load_error(42)
    assert "<int>" in message and "unsupported image source type int" in message


def test_decode_error_is_chained_from_pil() -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(b"definitely not an image")
    assert info.value.__cause__ is not None


# --- decompression-bomb guard ---------------------------------------------------------------------------


@pytest.fixture
def spy_on_load(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every ImageFile.load call (the step that allocates and decodes pixels)."""
    calls: list[object] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        calls.append(self)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def test_huge_declared_png_is_refused_without_decoding(tmp_path: Path, spy_on_load: list[object]) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_blank_bilevel_png(20000, 20000))
    assert path.stat().st_size < 1_000_000
    before = _peak_rss_bytes()
    message = _load_error(path)
    assert _peak_rss_bytes() - before < 200 * 1024 * 1024  # decoding would touch 400 MB
    assert spy_on_load == []
    assert str(path) in message
    assert "400000000" in message


def test_size_guard_fires_before_decoding_below_pils_own_limit(spy_on_load: list[object]) -> None:
    # 9000x9000 = 81 M pixels: above MAX_SOURCE_PIXELS, below PIL's default warning threshold.
    assert 9000 * 9000 > MAX_SOURCE_PIXELS
    data = _blank_bilevel_png(9000, 9000)
    message = _load_error(data)
    assert spy_on_load == []
    assert "9000x9000" in message and "81000000" in message and f"<bytes {len(data)}>" in message


def test_max_source_pixels_is_configurable_and_base64_keeps_the_size_message(
    spy_on_load: list[object],
) -> None:
    data = _png_bytes(Image.new("RGB", (100, 100)))
    assert "10000 pixels" in _load_error(data, max_source_pixels=9999)
    assert "10000 pixels" in _load_error(base64.b64encode(data).decode(), max_source_pixels=9999)
    assert spy_on_load == []
    assert load_image(data, max_source_pixels=10000).size == (100, 100)
    assert spy_on_load  # the same code path does decode once the limit allows it


def test_pil_global_limit_is_left_alone() -> None:
    before = Image.MAX_IMAGE_PIXELS
    _load_error(_blank_bilevel_png(9000, 9000))
    assert Image.MAX_IMAGE_PIXELS == before


# --- smart_resize ---------------------------------------------------------------------------------------


def test_smart_resize_hand_computed_cases() -> None:
    # Already a multiple of 32 and within bounds: unchanged.
    assert smart_resize(224, 224) == (224, 224)
    # round(3.125)=3 -> 96, round(9.375)=9 -> 288; 27648 px is within bounds.
    assert smart_resize(100, 300) == (96, 288)
    # 1x1: rounds up to 32x32 = 1024 < 4096 -> beta = 64 -> ceil(64/32)*32 = 64.
    assert smart_resize(1, 1) == (64, 64)
    # 20x40: 32x32 = 1024 < 4096 -> beta = sqrt(4096/800) = 2.263 -> ceil(1.41)*32, ceil(2.83)*32.
    assert smart_resize(20, 40) == (64, 96)
    # 10x500: round(0.31)=0 -> 32, round(15.6)=16 -> 512; 16384 px already >= min_pixels.
    assert smart_resize(10, 500) == (32, 512)
    # 5000x5000: 4992^2 > max -> beta = sqrt(25e6/1843200) = 3.683 -> floor(42.4)*32 = 1344.
    assert smart_resize(5000, 5000) == (1344, 1344)


@pytest.mark.parametrize("size", [(5000, 5000), (4000, 3000), (17, 3000), (10, 500), (1, 1), (31, 33)])
def test_smart_resize_invariants(size: tuple[int, int]) -> None:
    h, w = smart_resize(*size)
    assert h % 32 == 0 and w % 32 == 0
    assert DEFAULT_MIN_PIXELS <= h * w <= DEFAULT_MAX_PIXELS
    # Aspect ratio kept within one factor step per side.
    assert abs(h / w - size[0] / size[1]) <= 32 / min(h, w) * max(1.0, size[0] / size[1]) + 1e-9


def test_smart_resize_custom_bounds_and_factor() -> None:
    assert smart_resize(1000, 1000, min_pixels=28 * 28, max_pixels=256 * 28 * 28, factor=28) == (448, 448)
    h, w = smart_resize(64, 64, min_pixels=128 * 128, max_pixels=256 * 256)
    assert (h, w) == (128, 128)
    assert math.isclose(h * w, 128 * 128)


def test_smart_resize_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="min_pixels"):
        smart_resize(100, 100, min_pixels=5000, max_pixels=4000)
    with pytest.raises(ImageLoadError, match="aspect ratio"):
        smart_resize(1, 201)
    smart_resize(1, 200)  # exactly 200 is allowed
    with pytest.raises(ImageLoadError):
        smart_resize(0, 10)


# --- prepare_image ------------------------------------------------------------------------------------


def test_prepare_image_one_pixel_scales_up_to_the_minimum() -> None:
    out = prepare_image(_png_bytes(Image.new("RGB", (1, 1), RED)))
    assert out.size == (64, 64) and out.mode == "RGB"
    assert out.getpixel((10, 10)) == RED


def test_prepare_image_resizes_with_width_height_order() -> None:
    out = prepare_image(Image.new("RGB", (300, 100), RED))  # PIL size is (w, h)
    assert out.size == (288, 96)
    big = prepare_image(Image.new("RGB", (5000, 5000)))
    assert big.size == (1344, 1344)


def test_prepare_image_keeps_an_already_valid_size_untouched() -> None:
    src = Image.effect_noise((224, 224), 40).convert("RGB")
    assert image_digest(prepare_image(src)) == image_digest(src)


def test_prepare_image_names_the_source_for_a_bad_aspect_ratio() -> None:
    data = _png_bytes(Image.new("RGB", (500, 2)))
    with pytest.raises(ImageLoadError, match="aspect ratio") as info:
        prepare_image(data)
    assert f"<bytes {len(data)}>" in str(info.value)


# --- image_digest and describe_source -----------------------------------------------------------------


def test_digest_equal_across_sources_and_sensitive_to_one_pixel(red_png: Path) -> None:
    from_pil = load_image(_red_image())
    from_bytes = load_image(red_png.read_bytes())
    from_b64 = load_image(base64.b64encode(red_png.read_bytes()).decode())
    assert image_digest(from_pil) == image_digest(from_bytes) == image_digest(from_b64)
    changed = from_pil.copy()
    changed.putpixel((3, 2), (200, 30, 41))
    assert image_digest(changed) != image_digest(from_pil)
    assert len(image_digest(from_pil)) == 64


def test_digest_distinguishes_mode_and_shape_with_equal_bytes() -> None:
    flat = Image.new("L", (6, 1), 5)
    tall = Image.new("L", (1, 6), 5)
    assert flat.tobytes() == tall.tobytes()
    assert image_digest(flat) != image_digest(tall)


def test_describe_source() -> None:
    assert describe_source(b"1234") == "<bytes 4>"
    assert describe_source(Image.new("RGB", (32, 16))) == "<PIL 32x16>"
    assert describe_source("https://x.org/a.png") == "'https://x.org/a.png'"  # strings as given: repr
    assert describe_source(Path("pictures/a.png")) == "'pictures/a.png'"
    assert describe_source("cat.png\n") == "'cat.png\\n'"  # a trailing newline stays visible
    assert describe_source("A" * 120) == "<base64 120 chars>"
    assert describe_source("data:image/png;base64," + "A" * 5000).startswith("<data URI image/png")
    assert describe_source(3.5) == "<float>"
    assert len(describe_source("https://x.org/" + "a" * 10_000)) < 300
