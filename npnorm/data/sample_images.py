"""Real images for the book's demonstrations, from the sample data that ships with matplotlib.

No download is needed: matplotlib installs a few sample files with itself
(``matplotlib.cbook.get_sample_data``). :func:`available_images` lists the ones that are pictures;
:func:`load_sample_image` returns one as a float64 array with values in ``[0, 1]``:

* ``"grace_hopper"`` - a colour photograph (600 x 512, RGB),
* ``"present"`` - a small colour illustration of a present (128 x 128, RGBA),
* ``"logo"`` - the matplotlib logo (130 x 542, RGBA),
* ``"mri"`` - a grayscale MRI slice of a head (256 x 256, 16-bit raw data).

Images with an alpha channel are composited over a background (white by default). ``mode="rgb"``
gives ``(H, W, 3)`` (grayscale images are repeated over the three channels), ``mode="gray"`` gives
``(H, W)`` (the luminance ``0.299 R + 0.587 G + 0.114 B`` of colour images), ``mode=None`` keeps
the image's own channels after alpha compositing. :func:`to_nchw` and :func:`from_nchw` convert to
and from the ``(N, C, H, W)`` layout the layers use.
"""

from __future__ import annotations

import gzip

import numpy as np

__all__ = ["SAMPLE_IMAGES", "available_images", "load_sample_image", "to_nchw", "from_nchw"]

#: name -> (file in matplotlib's sample data, description)
SAMPLE_IMAGES: dict[str, tuple[str, str]] = {
    "grace_hopper": ("grace_hopper.jpg", "colour photograph of Grace Hopper, 600 x 512 RGB"),
    "present": ("Minduka_Present_Blue_Pack.png", "colour illustration of a present, 128 x 128 RGBA"),
    "logo": ("logo2.png", "the matplotlib logo, 130 x 542 RGBA"),
    "mri": ("s1045.ima.gz", "grayscale MRI slice of a head, 256 x 256, 16-bit"),
}

_LUMA = np.array([0.299, 0.587, 0.114])


def available_images() -> dict[str, str]:
    """The names :func:`load_sample_image` accepts, with a description of each."""
    return {name: desc for name, (_, desc) in SAMPLE_IMAGES.items()}


def _read(name: str) -> np.ndarray:
    from matplotlib import cbook, image

    filename = SAMPLE_IMAGES[name][0]
    path = cbook.get_sample_data(filename, asfileobj=False)
    if filename.endswith(".ima.gz"):
        with gzip.open(path) as f:
            raw = np.frombuffer(f.read(), dtype="<u2").reshape(256, 256).astype(np.float64)
        return raw / raw.max()
    img = np.asarray(image.imread(path))
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    return img.astype(np.float64)


def _shrink(img: np.ndarray, max_size: int) -> np.ndarray:
    """Average non-overlapping k x k blocks, with the smallest k that makes both sides <= max_size."""
    h, w = img.shape[:2]
    k = int(np.ceil(max(h, w) / max_size))
    if k <= 1:
        return img
    h2, w2 = (h // k) * k, (w // k) * k
    img = img[:h2, :w2]
    return img.reshape(h2 // k, k, w2 // k, k, *img.shape[2:]).mean(axis=(1, 3))


def load_sample_image(name: str, mode: str | None = "rgb", max_size: int | None = None,
                      background: float = 1.0) -> np.ndarray:
    """Load one of matplotlib's sample pictures as float64 in ``[0, 1]``.

    Parameters
    ----------
    name : str
        One of :func:`available_images` (``"grace_hopper"``, ``"present"``, ``"logo"``, ``"mri"``).
    mode : {"rgb", "gray", None}
        ``"rgb"``: ``(H, W, 3)``; ``"gray"``: ``(H, W)``; ``None``: the image's own channels
        (``(H, W)`` for grayscale, ``(H, W, 3)`` for colour) after alpha compositing.
    max_size : int, optional
        Shrink by block averaging (an integer factor) until both sides are at most this.
    background : float
        Grey level (0 black, 1 white) that transparent pixels are composited over.
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"load_sample_image: unknown image {name!r}; available: {sorted(SAMPLE_IMAGES)}")
    if mode not in ("rgb", "gray", None):
        raise ValueError(f"load_sample_image: mode must be 'rgb', 'gray' or None, got {mode!r}")
    if max_size is not None and (not isinstance(max_size, (int, np.integer)) or max_size < 1):
        raise ValueError(f"load_sample_image: max_size must be a positive int, got {max_size!r}")
    img = _read(name)
    if img.ndim == 3 and img.shape[2] == 4:  # composite RGBA over the background
        alpha = img[..., 3:]
        img = img[..., :3] * alpha + background * (1.0 - alpha)
    if mode == "rgb" and img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif mode == "gray" and img.ndim == 3:
        img = img @ _LUMA
    if max_size is not None:
        img = _shrink(img, max_size)
    return np.ascontiguousarray(img, dtype=np.float64)


def to_nchw(img: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` image -> ``(1, C, H, W)`` array (C = 1 for grayscale)."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ValueError(f"to_nchw: expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def from_nchw(x: np.ndarray, clip: bool = True) -> np.ndarray:
    """``(1, C, H, W)`` -> ``(H, W, C)`` image (``(H, W)`` when C = 1), clipped to ``[0, 1]``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"from_nchw: expected shape (1, C, H, W), got {x.shape}")
    img = x[0].transpose(1, 2, 0)
    if img.shape[2] == 1:
        img = img[..., 0]
    return np.clip(img, 0.0, 1.0) if clip else img
