"""Numpy twin of the image preprocessing used in training: tf.image.resize (bilinear, half-pixel
centres, no antialiasing) followed by the backbone's scaling `(x[..., order] - mean) / std`."""

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
    y0, y1, wy = _axis_weights(x.shape[0], height)
    x0, x1, wx = _axis_weights(x.shape[1], width)
    wx = wx[None, :, None]
    top = x[y0][:, x0] + (x[y0][:, x1] - x[y0][:, x0]) * wx
    bottom = x[y1][:, x0] + (x[y1][:, x1] - x[y1][:, x0]) * wx
    return top + (bottom - top) * wy[:, None, None]


def normalize(image: np.ndarray, params: dict) -> np.ndarray:
    if params.get("channel_order", "RGB") == "BGR":
        image = image[..., ::-1]
    mean = np.asarray(params.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
    std = np.asarray(params.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
    return ((image - mean) / std).astype(np.float32)


def read_image_file(path: str | Path) -> np.ndarray:
    """Decode a JPEG/PNG (with Pillow, imported only here) or load a .npy array."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"image file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read {path} as a numpy array: {exc}") from None
    try:
        from PIL import Image
    except ImportError:
        raise InvalidInputError(f"decoding {path.suffix} files needs Pillow (pip install pillow); "
                                "or pass uint8 HxWx3 arrays / .npy files") from None
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise InvalidInputError(f"cannot decode image {path}: {exc}") from None


def check_image(image, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)  # greyscale -> RGB
    if image.ndim != 3 or image.shape[-1] != 3:
        raise InvalidInputError(f"image input {index} has shape {tuple(image.shape)}; expected "
                                "HxWx3 RGB")
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
    return image


class ImagePreprocessor:
    """Images (uint8 HxWx3 arrays or file paths) -> float32 [N, H, W, 3] model inputs."""

    def __init__(self, params: dict):
        self.params = params
        self.height = int(params["height"])
        self.width = int(params["width"])
        if params.get("resize", "bilinear") != "bilinear" or params.get("antialias", False):
            raise InvalidInputError("only bilinear resizing without antialiasing is supported")

    def one(self, image) -> np.ndarray:
        return normalize(resize_bilinear(image, self.height, self.width), self.params)

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
