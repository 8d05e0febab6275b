"""Hostile and unusual uploads, generated on the fly (no binaries in the repo), each with its expected answer."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from imagegen import encode, formula_image, photo_like


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    status: int
    code: str | None  # problem code for errors; None for a 200
    content_type: str = "application/octet-stream"
    filename: str = "upload.bin"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, *, bit_depth: int, color_type: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG written by hand, for what Pillow will not write (16-bit RGB, lying headers, bombs)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + extra
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def png_bomb() -> bytes:
    """Declares 100000 x 100000 pixels (10 G) in a few hundred bytes of zeros."""
    return raw_png(100_000, 100_000, bit_depth=8, color_type=0, rows=b"\x00" * 100_001)


def png_zlib_bomb_small_header() -> bytes:
    """Declares 7100 x 7100 (50.4 M pixels, just over the limit): an IDAT inflating to 50 MB from ~50 KB."""
    return raw_png(7100, 7100, bit_depth=8, color_type=0, rows=b"\x00" * (7101 * 7100))


def png_16bit_rgb() -> bytes:
    arr = (np.arange(64 * 48 * 3, dtype=np.uint32).reshape(48, 64, 3) * 997 % 65536).astype(">u2")
    rows = b"".join(b"\x00" + arr[y].tobytes() for y in range(48))
    return raw_png(64, 48, bit_depth=16, color_type=2, rows=rows)


def png_zero_width() -> bytes:
    return raw_png(0, 10, bit_depth=8, color_type=0, rows=b"")


def png_text_bomb() -> bytes:
    """A zTXt chunk inflating to 64 MB: metadata that must not be inflated without bound."""
    payload = b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 1024 * 1024), 9)
    rows = b"".join(b"\x00" + bytes(8) for _ in range(8))
    return raw_png(8, 8, bit_depth=8, color_type=0, rows=rows, extra=png_chunk(b"zTXt", payload))


def gif_bomb() -> bytes:
    """Logical screen and frame of 65535 x 65535 with a one-pixel LZW body."""
    good = encode(Image.new("P", (1, 1)), "GIF")
    # Patch the logical screen size (bytes 6..9) and the first image descriptor's size.
    data = bytearray(good)
    data[6:10] = struct.pack("<HH", 65535, 65535)
    i = data.index(b"\x2c")
    data[i + 5 : i + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def jpeg_bomb() -> bytes:
    """A baseline JPEG whose SOF0 header claims 65500 x 65500 pixels."""
    data = bytearray(photo_like(16, 16))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = struct.pack(">HH", 65500, 65500)
    return bytes(data)


def bmp_bomb() -> bytes:
    data = bytearray(encode(Image.new("RGB", (4, 4)), "BMP"))
    data[18:26] = struct.pack("<ii", 30000, 30000)
    return bytes(data)


def webp_bomb() -> bytes:
    """A lossless WebP whose header says 16384 x 16384 (268 M pixels)."""
    data = bytearray(encode(Image.new("RGB", (4, 4)), "WEBP", lossless=True))
    i = data.index(b"VP8L") + 8
    bits = (16384 - 1) | ((16384 - 1) << 14)
    data[i + 1 : i + 5] = struct.pack("<I", bits | (int.from_bytes(data[i + 1 : i + 5], "little") & ~0x0FFFFFFF))
    return bytes(data)


def animated(fmt: str, frames: int, size: tuple[int, int] = (64, 64)) -> bytes:
    images = [Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, fmt, save_all=True, append_images=images[1:], duration=10, loop=0)
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    return encode(formula_image(96, 64).convert("CMYK"), "JPEG", quality=90)


def ycck_jpeg() -> bytes:
    """A CMYK JPEG whose Adobe marker says YCCK (transform 2), as Photoshop writes them."""
    data = bytearray(cmyk_jpeg())
    i = data.index(b"Adobe")
    data[i + 11] = 2
    return bytes(data)


def palette_png_with_transparency() -> bytes:
    image = formula_image(64, 64).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, "PNG", transparency=0)


def gray_png_16bit() -> bytes:
    arr = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    return encode(Image.fromarray(arr), "PNG")


def with_exif_orientation(orientation: int) -> bytes:
    image = formula_image(80, 60)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=90)


def broken_exif_jpeg() -> bytes:
    """An APP1 Exif segment with a truncated TIFF header and garbage IFD offsets."""
    body = photo_like(64, 64)
    segment = b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0" + b"\xde\xad" * 20
    app1 = b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment
    return body[:2] + app1 + body[2:]


def broken_icc_jpeg() -> bytes:
    return encode(formula_image(64, 64), "JPEG", icc_profile=b"not an ICC profile at all" * 10)


def broken_icc_png() -> bytes:
    return encode(formula_image(64, 64), "PNG", icc_profile=b"\x00\x01garbage" * 50)


def truncated(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


def tiff() -> bytes:
    return encode(formula_image(32, 32), "TIFF")


def many_frame_gif() -> bytes:
    return animated("GIF", 300, (32, 32))


CASES: list[Case] = [
    # Not images at all, whatever the name or declared type says.
    Case("zero_bytes", lambda: b"", 400, "invalid_image", "image/jpeg", "empty.jpg"),
    Case(
        "random_bytes_as_jpeg",
        lambda: np.random.default_rng(1).bytes(4096),
        415,
        "unsupported_media_type",
        "image/jpeg",
        "noise.jpg",
    ),
    Case(
        "random_bytes_as_png",
        lambda: np.random.default_rng(2).bytes(333),
        415,
        "unsupported_media_type",
        "image/png",
        "noise.png",
    ),
    Case("text_file", lambda: b"hello, world\n" * 50, 415, "unsupported_media_type", "text/plain", "a.txt"),
    Case(
        "html_named_png",
        lambda: b"<!doctype html><script>alert(1)</script>",
        415,
        "unsupported_media_type",
        "image/png",
        "x.png",
    ),
    Case(
        "svg",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
        415,
        "unsupported_media_type",
        "image/svg+xml",
        "x.svg",
    ),
    Case("pdf_header", lambda: b"%PDF-1.7\n" + bytes(200), 415, "unsupported_media_type", "application/pdf", "a.pdf"),
    Case("tiff_not_accepted", tiff, 415, "unsupported_media_type", "image/tiff", "a.tiff"),
    Case("png_signature_only", lambda: b"\x89PNG\r\n\x1a\n", 400, "invalid_image", "image/png", "sig.png"),
    Case("jpeg_soi_only", lambda: b"\xff\xd8\xff\xe0" + bytes(12), 400, "invalid_image", "image/jpeg", "soi.jpg"),
    # Truncated and corrupt.
    Case("truncated_jpeg", lambda: truncated(photo_like(256, 256), 0.5), 400, "invalid_image", "image/jpeg", "t.jpg"),
    Case(
        "truncated_png",
        lambda: truncated(encode(formula_image(128, 128)), 0.6),
        400,
        "invalid_image",
        "image/png",
        "t.png",
    ),
    Case(
        "truncated_gif",
        lambda: truncated(encode(formula_image(128, 128), "GIF"), 0.5),
        400,
        "invalid_image",
        "image/gif",
        "t.gif",
    ),
    Case(
        "truncated_webp",
        lambda: truncated(encode(formula_image(128, 128), "WEBP"), 0.5),
        400,
        "invalid_image",
        "image/webp",
        "t.webp",
    ),
    Case("png_zero_width", png_zero_width, 400, "invalid_image", "image/png", "zero.png"),
    Case("png_text_chunk_bomb", png_text_bomb, 400, "invalid_image", "image/png", "ztxt.png"),
    # Decompression bombs: huge declared size, small body.
    Case("png_bomb", png_bomb, 413, "image_too_large", "image/png", "bomb.png"),
    Case("png_just_over_pixel_limit", png_zlib_bomb_small_header, 413, "image_too_large", "image/png", "big.png"),
    Case("gif_bomb", gif_bomb, 413, "image_too_large", "image/gif", "bomb.gif"),
    Case("jpeg_bomb", jpeg_bomb, 413, "image_too_large", "image/jpeg", "bomb.jpg"),
    Case("bmp_bomb", bmp_bomb, 413, "image_too_large", "image/bmp", "bomb.bmp"),
    Case("webp_bomb", webp_bomb, 413, "image_too_large", "image/webp", "bomb.webp"),
    # Odd but valid: each must classify.
    Case("aspect_1x10000", lambda: encode(formula_image(1, 10_000)), 200, None, "image/png", "tall.png"),
    Case("aspect_10000x1", lambda: encode(formula_image(10_000, 1)), 200, None, "image/png", "wide.png"),
    Case("tiny_1x1", lambda: encode(formula_image(1, 1)), 200, None, "image/png", "dot.png"),
    Case("animated_gif_300_frames", many_frame_gif, 200, None, "image/gif", "anim.gif"),
    Case("animated_webp_60_frames", lambda: animated("WEBP", 60), 200, None, "image/webp", "anim.webp"),
    Case("cmyk_jpeg", cmyk_jpeg, 200, None, "image/jpeg", "cmyk.jpg"),
    Case("ycck_jpeg", ycck_jpeg, 200, None, "image/jpeg", "ycck.jpg"),
    Case("png_16bit_rgb", png_16bit_rgb, 200, None, "image/png", "rgb48.png"),
    Case("png_16bit_gray", gray_png_16bit, 200, None, "image/png", "gray16.png"),
    Case("palette_png_transparency", palette_png_with_transparency, 200, None, "image/png", "pal.png"),
    Case("rgba_png", lambda: encode(formula_image(64, 64).convert("RGBA")), 200, None, "image/png", "rgba.png"),
    Case("la_png", lambda: encode(formula_image(64, 64).convert("LA")), 200, None, "image/png", "la.png"),
    Case("one_bit_png", lambda: encode(formula_image(64, 64).convert("1")), 200, None, "image/png", "bw.png"),
    Case(
        "grayscale_jpeg", lambda: encode(formula_image(64, 64).convert("L"), "JPEG"), 200, None, "image/jpeg", "g.jpg"
    ),
    Case("bmp", lambda: encode(formula_image(40, 30), "BMP"), 200, None, "image/bmp", "a.bmp"),
    *[
        Case(f"exif_orientation_{o}", lambda o=o: with_exif_orientation(o), 200, None, "image/jpeg", f"o{o}.jpg")
        for o in range(1, 9)
    ],
    Case("broken_exif", broken_exif_jpeg, 200, None, "image/jpeg", "exif.jpg"),
    Case("broken_icc_jpeg", broken_icc_jpeg, 200, None, "image/jpeg", "icc.jpg"),
    Case("broken_icc_png", broken_icc_png, 200, None, "image/png", "icc.png"),
    # Polyglots: decoded by content; trailing payloads are ignored.
    Case(
        "png_plus_zip",
        lambda: encode(formula_image(32, 32)) + b"PK\x03\x04" + bytes(100),
        200,
        None,
        "image/png",
        "poly.png",
    ),
    Case(
        "jpeg_plus_html",
        lambda: photo_like(64, 64) + b"<html><script>alert(1)</script></html>",
        200,
        None,
        "text/html",
        "poly.html",
    ),
    Case(
        "gif_with_js_comment",
        lambda: encode(formula_image(16, 16), "GIF", comment=b"*/=alert(1)//"),
        200,
        None,
        "application/javascript",
        "poly.js",
    ),
]


# EXIF orientation n: how to turn the upright image into the stored pixels (the inverse of what a viewer does).
_STORE_AS = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_90],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_270],
}


def oriented_png(orientation: int) -> tuple[bytes, bytes]:
    """(upright PNG, PNG stored transformed with the EXIF orientation tag that undoes it)."""
    upright = Image.fromarray(np.asarray(Image.open(io.BytesIO(photo_like(96, 64, seed=orientation))).convert("RGB")))
    stored = upright
    for op in _STORE_AS[orientation]:
        stored = stored.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(upright, "PNG"), encode(stored, "PNG", exif=exif.tobytes())
