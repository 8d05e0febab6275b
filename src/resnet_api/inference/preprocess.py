"""decode(bytes) -> RGB image; to_tensor(image) -> 3x224x224, identical to torchvision's ImageNet eval transform."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnet_api.inference.errors import ImageTooLarge, InvalidImage, UnsupportedImage

RESIZE = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# MPO is how Pillow names multi-picture JPEGs from phone cameras.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP"})
OPEN_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")  # Pillow opens MPO through its JPEG plugin
# Above this many pixels after the resize, only the crop's region is resampled (same filter positions, far less
# work): extreme aspect ratios such as 1x10000 would otherwise be resized to 256x2560000 first.
MAX_RESIZED_PIXELS = 4 * RESIZE * RESIZE * 4
# Transparent pixels are shown over white, as on a typical page; their hidden RGB is often black garbage.
ALPHA_BACKGROUND = (255, 255, 255)
# libjpeg passes over every block once per scan: a progressive JPEG has about 10, a hostile one thousands of
# tiny ones (7000x7000 with 600 scans: 32 s of decoding from 237 KB). Markers cannot occur inside scan data.
MAX_JPEG_SCANS = 100
# Pillow reads a PNG's chunks one by one: 1.5 million empty ones (18 MB) took 9.6 s to open. An image has tens of
# chunks besides its data (IDAT); more than this many is refused, counted without reading past the limit.
MAX_PNG_CHUNKS = 1000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The pixel limit is the caller's (`max_pixels`: RESNET_API_MAX_IMAGE_PIXELS, up to 1e9), checked from the header
# right after `Image.open`, before any pixel is decoded. Pillow's own fixed guard, checked inside `Image.open`
# (a warning above 89 MP, an error above 179 MP), would otherwise cap the setting and log warnings below it.
Image.MAX_IMAGE_PIXELS = None
# 16-bit grey to 8 bits, round(v * 255 / 65535), as a table: one byte of work per pixel, not float64 copies.
_16_TO_8 = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image
    width: int
    height: int
    format: str


def decode(data: bytes, *, max_pixels: int, draft: bool = False) -> DecodedImage:
    """Decode by content (not name or declared type); first frame; EXIF orientation applied; RGB.

    `draft` lets a JPEG decode at 1/2, 1/4 or 1/8 scale in the DCT domain, the smallest that keeps
    both sides >= RESIZE (so the shorter side still reaches 256 px): much faster for large photos.

    Raises only `InvalidImage` (400), `UnsupportedImage` (415) or `ImageTooLarge` (413) for bad input.
    """
    if not data:
        raise InvalidImage("the file is empty")
    # Before Pillow opens it: opening is what reads the chunks.
    if data.startswith(PNG_SIGNATURE) and _png_chunks_besides_data(data, MAX_PNG_CHUNKS) > MAX_PNG_CHUNKS:
        raise InvalidImage(f"the PNG has more than {MAX_PNG_CHUNKS} chunks besides its image data")
    try:
        # Only the accepted formats' parsers ever see the bytes (less attack surface than trying all of Pillow's).
        image: Image.Image = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except UnidentifiedImageError as exc:
        sniffed = sniff_format(data)
        if sniffed is not None:
            raise InvalidImage(f"the file starts like a {sniffed} image but cannot be read: it is corrupt") from exc
        raise UnsupportedImage("not a recognised image: send a JPEG, PNG, GIF, WebP or BMP file") from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types (struct.error, TypeError, ...) on hostile headers
        raise InvalidImage(f"cannot read image header: {exc}") from exc
    fmt = image.format or "unknown"
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"image format {fmt} is not accepted: send a JPEG, PNG, GIF, WebP or BMP file")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if width < 1 or height < 1:
        raise InvalidImage(f"image is {width}x{height}: it has no pixels")
    if fmt in ("JPEG", "MPO") and (scans := data.count(b"\xff\xda")) > MAX_JPEG_SCANS:
        raise InvalidImage(f"the JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are decoded (a photo has about 10)")
    try:
        image.seek(0)  # first frame only: the other frames of an animation are never decoded
        if draft and fmt in ("JPEG", "MPO"):
            image.draft(None, (RESIZE, RESIZE))
        image.load()
        stored = image.size
        image = _apply_exif_orientation(image)
        if image.size != stored:  # turned a quarter: the size as shown, as every viewer reports it
            width, height = height, width
        rgb = to_rgb(image)
    except MemoryError:
        raise
    except Exception as exc:  # as above: any decoder failure on hostile data is the data's fault
        raise InvalidImage(f"corrupt or truncated {fmt} image: {exc}") from exc
    return DecodedImage(rgb, width, height, "JPEG" if fmt == "MPO" else fmt)


def _png_chunks_besides_data(data: bytes, limit: int) -> int:
    """How many chunks other than image data the PNG has, counting no further than `limit + 1` of them.

    Walks the chunk headers (length, type) without reading their bodies; image data chunks (IDAT, and an
    animation's fdAT), which a large image may have thousands of, are skipped by the same walk but not counted.
    """
    count, pos, end = 0, 8, len(data)
    while pos + 8 <= end and count <= limit:
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] not in (b"IDAT", b"fdAT"):
            count += 1
        pos += 12 + length
    return count


def warm_up_jpeg() -> bytes:
    """A small JPEG to decode at start-up (a gradient, 320x240): it takes the path of a typical photo."""
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (240, 1)), np.tile(ramp[::-1], (240, 1)), np.full((240, 320), 128, np.uint8)], -1)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


# Leading bytes of the accepted formats: a file that starts like one but does not open is corrupt (400), not 415.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (PNG_SIGNATURE, "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)


def sniff_format(data: bytes) -> str | None:
    """The accepted format the bytes claim to be by their signature, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, fmt in _SIGNATURES:
        if data.startswith(signature):
            return fmt
    return None


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip per EXIF; broken EXIF data leaves the image as it is rather than failing the request."""
    try:
        return ImageOps.exif_transpose(image) or image
    except MemoryError:
        raise
    except Exception:  # includes Pillow's "Corrupt EXIF data" warning when warnings are errors
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency (alpha, LA, palette or tRNS) composited over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey (PNG): PIL would clip it at 255
        return _grey16_to_rgb(image)
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _grey16_to_rgb(image: Image.Image) -> Image.Image:
    """Scaled to 8 bits whatever its brightest pixel; a tRNS grey value composited over white like alpha."""
    values = np.asarray(image)
    if values.dtype != np.uint16:  # "I" is int32, "I;16B" big-endian
        values = np.clip(values, 0, 65535).astype(np.uint16)
    rgb = Image.fromarray(_16_TO_8[values], "L").convert("RGB")
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        rgb.paste(ALPHA_BACKGROUND, mask=Image.fromarray(((values == transparent) * 255).astype(np.uint8), "L"))
    return rgb


def resized_size(width: int, height: int, size: int = RESIZE) -> tuple[int, int]:
    """torchvision Resize(int): shorter side to `size`, longer side truncated like torchvision does."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width: int, height: int, crop: int = CROP) -> tuple[int, int, int, int]:
    """torchvision CenterCrop's box, with its round-half-to-even offsets."""
    top = round((height - crop) / 2.0)
    left = round((width - crop) / 2.0)
    return left, top, left + crop, top + crop


def resize_and_crop(image: Image.Image) -> Image.Image:
    size = resized_size(*image.size)
    if size[0] * size[1] > MAX_RESIZED_PIXELS:
        # Resample only the crop: output pixel i maps to source (left + i + 0.5) * scale either way.
        sx, sy = image.width / size[0], image.height / size[1]
        left, top, right, bottom = center_crop_box(*size)
        box = (left * sx, top * sy, right * sx, bottom * sy)
        return image.resize((right - left, bottom - top), Image.Resampling.BILINEAR, box=box)
    resized = image.resize(size, Image.Resampling.BILINEAR)
    return resized.crop(center_crop_box(*resized.size))


def to_pixels(image: Image.Image) -> np.ndarray:
    """The 224x224x3 uint8 crop: what waits in the batch queue (a quarter of the normalised array's bytes)."""
    return np.asarray(resize_and_crop(image), dtype=np.uint8)


def normalize_batch(pixels: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32: x / 255, then (x - mean) / std.

    One buffer for the whole batch, and the result is a transposed view: channels-last in memory, which
    is the layout the torch backend runs in, so it needs no copy (the ONNX backends make it contiguous).
    The mean and std are repeated along a whole image row, so numpy's inner loop runs over 3W values rather
    than the 3 of the channel axis: the same float32 operations on the same numbers, 7-8x faster.
    """
    arr = pixels.astype(np.float32, order="C")  # C order, so `rows` below is a view of it, never a copy
    width = arr.shape[-2]
    rows = arr.reshape(-1, width * 3)
    rows /= np.float32(255.0)
    rows -= np.tile(MEAN, width)
    rows /= np.tile(STD, width)
    return arr.transpose(0, 3, 1, 2)


def model_batch(items: Sequence[np.ndarray]) -> np.ndarray:
    """Queue items -> one model input: uint8 HWC crops (decoded uploads) and float32 CHW arrays (sent preprocessed)."""
    if all(item.dtype == np.uint8 for item in items):
        return normalize_batch(np.stack(items))
    return np.stack([normalize_batch(item[None])[0] if item.dtype == np.uint8 else item for item in items])


def normalize(crop: Image.Image) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [0,1], then (x - mean) / std (the same arithmetic as `normalize_batch`)."""
    return np.ascontiguousarray(normalize_batch(np.asarray(crop, dtype=np.uint8)[None])[0])


def to_array(image: Image.Image) -> np.ndarray:
    """The normalised 3x224x224 float32 array the model takes."""
    return normalize(resize_and_crop(image))
