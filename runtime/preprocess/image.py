"""Image preprocessing shared by training and the runtime: a resize, then the backbone's scaling
`(x[..., order] - mean) / std`. Two resizes (the `resize` preprocessing parameter):
- "bilinear_mediapipe" (what `edgekit train` writes): MediaPipe Tasks' CPU resize, reproduced bit for
  bit, so a phone app using ImageClassifier feeds the model what training and `verify` fed it;
- "bilinear" (models trained before): tf.image.resize (bilinear, half-pixel centres, no antialiasing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.runtime.errors import InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".npy")


def _axis_weights(in_size: int, out_size: int):
    """Source indices and weights along one axis, computed in float32 as TensorFlow's
    ResizeBilinear kernel does (scale = in/out; src = (dst + 0.5) * scale - 0.5)."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(src)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(src).astype(np.int64), in_size - 1)
    return lower, upper, (src - floor).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] -> float32 [height, width, C], like tf.image.resize(method="bilinear")."""
    x = image.astype(np.float32)
    return _interpolate(x, _axis_weights(x.shape[0], height), _axis_weights(x.shape[1], width))


def _interpolate(x: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """Bilinear interpolation of [H, W, C] from per-axis (lower index, upper index, weight)."""
    (y0, y1, wy), (x0, x1, wx) = rows, cols
    wx = wx[None, :, None]
    top = x[y0][:, x0] + (x[y0][:, x1] - x[y0][:, x0]) * wx
    bottom = x[y1][:, x0] + (x[y1][:, x1] - x[y1][:, x0]) * wx
    return top + (bottom - top) * wy[:, None, None]


# MediaPipe's ImageToTensorCalculator warps with OpenCV (INTER_LINEAR), which rounds source coordinates to
# 1/32 pixel (INTER_BITS = 5). Measured against MediaPipe 0.10.21's ImageClassifier with an identity model
# (tests/test_phone.py): identical values on upscales, downscales and aspect-ratio changes.
MEDIAPIPE_SUBPIXELS = 32


def _mediapipe_axis(in_size: int, out_size: int):
    """Corner-aligned sampling (src = dst * in / out, no half-pixel offset) on a 1/32-pixel grid, the
    last source pixel repeated past the edge (BORDER_REPLICATE)."""
    src = np.rint(np.arange(out_size, dtype=np.float64) * (in_size / out_size) * MEDIAPIPE_SUBPIXELS)
    src = src / MEDIAPIPE_SUBPIXELS
    lower = np.floor(src).astype(np.int64)
    weight = src - lower
    return np.minimum(lower, in_size - 1), np.minimum(lower + 1, in_size - 1), weight


def resize_bilinear_mediapipe(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] -> float32 [height, width, C] holding the uint8 values MediaPipe Tasks' CPU image
    preprocessing gives (bilinear on the 1/32 grid, rounded half up like OpenCV's fixed point; the
    products of 1/32 weights and 8-bit pixels are exact in float64, so the rounding matches)."""
    x = image.astype(np.float64)
    value = _interpolate(x, _mediapipe_axis(x.shape[0], height), _mediapipe_axis(x.shape[1], width))
    return np.clip(np.floor(value + 0.5), 0, 255).astype(np.float32)


RESIZES = {"bilinear": resize_bilinear, "bilinear_mediapipe": resize_bilinear_mediapipe}


def resize(image: np.ndarray, params: dict) -> np.ndarray:
    return RESIZES[params.get("resize", "bilinear")](image, int(params["height"]), int(params["width"]))


def normalize(image: np.ndarray, params: dict) -> np.ndarray:
    if params.get("channel_order", "RGB") == "BGR":
        image = image[..., ::-1]
    mean = np.asarray(params.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
    std = np.asarray(params.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
    return ((image - mean) / std).astype(np.float32)


# Reading (training's image loader calls read_image_file too, so both see the same pixels):
# - EXIF orientation is applied (phones store portrait photos sideways with an orientation tag);
# - transparent pixels are composited on BACKGROUND (white), in files and in RGBA arrays alike;
# - greyscale, palette, CMYK, 16-bit (scaled to 8 bits), WebP, BMP, GIF (first frame) become RGB;
# - large photos are decoded reduced: JPEG by DCT scaling (Pillow's `draft`: 1/2, 1/4 or 1/8), other
#   formats by box averaging (`reduce`), to the largest power-of-two reduction that keeps the shorter
#   side at DECODE_MIN_SIDE pixels or more. A 12-megapixel phone JPEG (4032x3024) is decoded at 1/4
#   (1008x756); the resize to the model's input happens after, exactly as before. Models whose input
#   side exceeds DECODE_MIN_SIDE see such photos upscaled from 512+ pixels, in training as on devices.
BACKGROUND = (255, 255, 255)
DECODE_MIN_SIDE = 512


def decode_reduction(width: int, height: int) -> int:
    """The power-of-two reduction large photos are decoded at (see the rules above)."""
    factor = 1
    while min(width, height) // (factor * 2) >= DECODE_MIN_SIDE:
        factor *= 2
    return factor


def composite(rgba: np.ndarray) -> np.ndarray:
    """[H, W, 4] -> [H, W, 3] over BACKGROUND: uint8 in (rounded), uint8 out; float in, float out."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    background = np.asarray(BACKGROUND)
    if rgba.dtype == np.uint8:
        mixed = rgb.astype(np.uint32) * alpha + background.astype(np.uint32) * (255 - alpha.astype(np.uint32))
        return ((mixed + 127) // 255).astype(np.uint8)
    alpha = alpha.astype(np.float64) / 255.0
    return rgb * alpha + background * (1.0 - alpha)


def decode_image(img) -> np.ndarray:
    """An open PIL image -> uint8 [H, W, 3] (see the rules above)."""
    from PIL import ImageOps

    factor = decode_reduction(*img.size)
    if factor > 1 and img.format == "JPEG":
        img.draft(img.mode, (-(-img.size[0] // factor), -(-img.size[1] // factor)))
    img = ImageOps.exif_transpose(img)
    factor = decode_reduction(*img.size)
    if factor > 1:
        img = img.reduce(factor)
    if img.mode.startswith("I") or img.mode == "F":  # 16-bit greyscale PNG/TIFF: 0..65535 -> 0..255
        wide = np.asarray(img).astype(np.float64)
        grey = np.clip(np.rint(wide if img.mode == "F" else wide / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if "A" in img.getbands() or "transparency" in img.info:
        return composite(np.asarray(img.convert("RGBA")))
    return np.asarray(img.convert("RGB"))


def read_image_file(path: str | Path) -> np.ndarray:
    """Decode an image file (Pillow, imported only here) to uint8 [H, W, 3], or load a .npy array."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"image file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read {path} as a numpy array: {exc}") from None
    return _open_and_decode(path, str(path), path.suffix)


def read_image_bytes(data: bytes, name: str = "the upload") -> np.ndarray:
    """An encoded image held in memory (a server's upload) -> uint8 [H, W, 3], decoded exactly as
    read_image_file decodes a file."""
    import io

    return _open_and_decode(io.BytesIO(data), name, "image")


def image_size(data: bytes, name: str = "the upload") -> tuple[int, int]:
    """(width, height) from an encoded image's header only (nothing decoded: a server checks the size
    before it decodes an upload); Pillow's own errors as one InvalidInputError line naming `name`."""
    import io
    import re

    try:
        from PIL import Image
    except ImportError:
        raise InvalidInputError("decoding images needs Pillow (pip install pillow, or apt install "
                                "python3-pil)") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception as exc:  # Pillow raises many types for corrupt data
        why = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", name, str(exc).splitlines()[0] if str(exc) else "")
        raise InvalidInputError(f"cannot decode the image: {why or type(exc).__name__}") from None


def _open_and_decode(source, name: str, what: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise InvalidInputError(f"decoding {what} files needs Pillow (pip install pillow, or "
                                "apt install python3-pil); or pass uint8 HxWx3 arrays / .npy files") from None
    try:
        with Image.open(source) as img:
            return decode_image(img)
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise InvalidInputError(f"cannot decode image {name}: {exc}") from None


def check_image(image, index: int) -> np.ndarray:
    """An image array -> [H, W, 3]: uint8, or float/int pixel values in 0..255 (not 0..1). Greyscale
    (HxW or HxWx1) is repeated to RGB; RGBA is composited on BACKGROUND like a file's alpha."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)  # greyscale -> RGB
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InvalidInputError(f"image input {index} has shape {tuple(image.shape)}; expected "
                                "HxWx3 RGB (or HxW grey, HxWx4 RGBA)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"image input {index} is empty (shape {tuple(image.shape)})")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
            raise InvalidInputError(f"image input {index} has dtype {image.dtype}; expected uint8")
        if not np.all(np.isfinite(image)):
            raise InvalidInputError(f"image input {index} contains NaN or inf")
        if image.min() < 0 or image.max() > 255:
            raise InvalidInputError(f"image input {index} has values outside 0..255 "
                                    f"({image.min()}..{image.max()}); expected uint8 pixels")
    return composite(image) if image.shape[-1] == 4 else image


class ImagePreprocessor:
    """Images (uint8 HxWx3 arrays or file paths) -> float32 [N, H, W, 3] model inputs."""

    def __init__(self, params: dict):
        self.params = params
        self.height = int(params["height"])
        self.width = int(params["width"])
        if params.get("resize", "bilinear") not in RESIZES or params.get("antialias", False):
            raise InvalidInputError(f"unsupported resize {params.get('resize')!r} (antialias "
                                    f"{params.get('antialias', False)}); supported: {', '.join(RESIZES)} "
                                    "without antialiasing")

    def one(self, image) -> np.ndarray:
        return normalize(resize(image, self.params), self.params)

    def __call__(self, images) -> np.ndarray:
        if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        if len(images) == 0:
            raise InvalidInputError("no images given")
        batch = []
        for i, item in enumerate(images):
            if isinstance(item, (str, Path)):
                item = read_image_file(item)
            batch.append(self.one(check_image(item, i)))
        return np.stack(batch)
