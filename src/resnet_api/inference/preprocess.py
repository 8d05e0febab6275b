"""decode(bytes) -> RGB image; to_tensor(image) -> 3x224x224, identical to torchvision's ImageNet eval transform."""

from __future__ import annotations

import io
import warnings
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
# Transparent pixels are shown over white, as on a typical page; their hidden RGB is often black garbage.
ALPHA_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image
    width: int
    height: int
    format: str


def decode(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode by content (not name or declared type); first frame; EXIF orientation applied; RGB."""
    if not data:
        raise InvalidImage("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=None)
    except UnidentifiedImageError as exc:
        raise UnsupportedImage("not a recognised image: send a JPEG, PNG, GIF, WebP or BMP file") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"cannot read image header: {exc}") from exc
    fmt = image.format or "unknown"
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"image format {fmt} is not accepted: send a JPEG, PNG, GIF, WebP or BMP file")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image) or image
        rgb = to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as exc:
        raise InvalidImage(f"corrupt or truncated {fmt} image: {exc}") from exc
    return DecodedImage(rgb, width, height, "JPEG" if fmt == "MPO" else fmt)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency (alpha, LA, palette or tRNS) composited over white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale to 8 bits instead of letting PIL clip at 255.
        arr = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


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
    resized = image.resize(resized_size(*image.size), Image.Resampling.BILINEAR)
    return resized.crop(center_crop_box(*resized.size))


def normalize(crop: Image.Image) -> np.ndarray:
    """HWC uint8 -> CHW float32 in [0,1], then (x - mean) / std."""
    arr = np.asarray(crop, dtype=np.float32) / np.float32(255.0)
    arr = (arr - MEAN) / STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def to_array(image: Image.Image) -> np.ndarray:
    """The normalised 3x224x224 float32 array the model takes."""
    return normalize(resize_and_crop(image))
