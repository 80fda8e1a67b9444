"""MMedPO visual dispreference: localized lesion noising (docs/methods.md §3(a) step 3). numpy only.

Heatmap sources: the true lesion mask (oracle), a CAM / attention map, or any 2-D array; it is resized to the image.

Released rule (`lesion_noise_released`, curation/.../inference_attention-map_score.py::generate_noised_image as
described): resize the map to the image size, Gaussian blur 15x15, threshold t = mean - std of the blurred map,
and *replace* the pixels whose blurred value is > t by N(0, 10) noise.
  * Value scale: the release works on normalised tensors ((x/255 - mean_c) / std_c), where N(0, 10) is 10 channel
    standard deviations. The uint8 equivalent used here is mean_c*255 + N(0, 10 * std_c * 255), clipped to 0..255,
    with ImageNet mean/std: about 85 % of the noised values saturate at 0 or 255 (salt and pepper).
  * Blur sigma: OpenCV's rule for a 15-pixel kernel, 0.3 * ((15 - 1) / 2 - 1) + 0.8 = 2.6 (a parameter).
  * Pitfall: mean - std < 0 whenever the map is peaked (a binary mask covering < 50 % of the image, a softmax
    attention map), and the blurred map is >= 0, so *every* pixel is above t and the "local" noise is global.
    `lesion_region` returns the region so notebooks can show this; `threshold=` overrides t.
Paper's blend (`lesion_noise_blend`): x* = sqrt(xi) (x . h) + sqrt(1 - xi) (eps . h) + x . (1 - h), with h the map
scaled to [0, 1], x in [-1, 1] (DDPM convention: x = image / 127.5 - 1), eps ~ N(0, 1), xi = xi_bar_k of the DDPM
schedule (`diffusion_xi_bar`); outside h = 0 the image is unchanged.
Global ablation (`global_noise`): the same operations with h = 1 everywhere.
All functions take `rng` as a seed or a numpy Generator and are deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

from repro import libm

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
NOISE_STD = 10.0  # released N(0, 10), in normalised units
KSIZE = 15


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _as_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {img.shape}")
    return img.astype(np.uint8, copy=False)


def resize_bilinear(a, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D array with half-pixel centres (cv2.INTER_LINEAR / align_corners=False)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected a non-empty 2-D heatmap, got shape {a.shape}")
    if a.shape == (height, width):
        return a.copy()

    def axis(n_out, n_in):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, x - lo

    y0, y1, wy = axis(height, a.shape[0])
    x0, x1, wx = axis(width, a.shape[1])
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def gaussian_kernel(ksize: int = KSIZE, sigma: float | None = None) -> np.ndarray:
    sigma = sigma if sigma and sigma > 0 else 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8  # OpenCV's default for sigma=0
    x = np.arange(ksize) - (ksize - 1) / 2
    k = libm.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(a, ksize: int = KSIZE, sigma: float | None = None) -> np.ndarray:
    """Separable Gaussian blur, mirrored borders (OpenCV's BORDER_REFLECT_101)."""
    a = np.asarray(a, dtype=np.float64)
    k = gaussian_kernel(ksize, sigma)
    r = ksize // 2
    mode = "reflect" if min(a.shape) > r else "edge"  # reflect needs the image to be wider than the radius
    p = np.pad(a, r, mode=mode)
    rows = sum(k[i] * p[:, i:i + a.shape[1]] for i in range(ksize))
    return sum(k[i] * rows[i:i + a.shape[0], :] for i in range(ksize))


def lesion_region(heatmap, shape, ksize: int = KSIZE, sigma: float | None = None,
                  threshold: float | None = None) -> np.ndarray:
    """Boolean H x W region the released rule noises: blur(resize(map)) > t, t = mean - std unless given."""
    blurred = gaussian_blur(resize_bilinear(heatmap, shape[0], shape[1]), ksize, sigma)
    t = blurred.mean() - blurred.std() if threshold is None else float(threshold)
    return blurred > t


def _released_noise(shape, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    z = rng.standard_normal(shape)
    vals = (IMAGENET_MEAN + noise_std * IMAGENET_STD * z) * 255.0  # N(0, s) in normalised units, back to pixels
    return np.clip(np.rint(vals), 0, 255).astype(np.uint8)


def lesion_noise_released(image, heatmap, rng=0, noise_std: float = NOISE_STD, ksize: int = KSIZE,
                          sigma: float | None = None, threshold: float | None = None,
                          return_region: bool = False):
    """Released localized noising: pixels in `lesion_region` replaced by N(0, noise_std) noise (uint8 scale, module
    docstring); other pixels unchanged. Returns the noised uint8 image (and the region when return_region)."""
    img = _as_image(image)
    region = lesion_region(heatmap, img.shape[:2], ksize, sigma, threshold)
    noise = _released_noise(img.shape, _rng(rng), noise_std)
    out = np.where(region[:, :, None], noise, img)
    return (out, region) if return_region else out


def _unit_map(heatmap, shape) -> np.ndarray:
    h = np.clip(resize_bilinear(heatmap, shape[0], shape[1]), 0, None)
    top = h.max()
    return h / top if top > 1 else h


def lesion_noise_blend(image, heatmap, xi_bar: float, rng=0) -> np.ndarray:
    """Paper's formula x* = sqrt(xi)(x.h) + sqrt(1-xi)(eps.h) + x.(1-h) on x in [-1, 1]; uint8 in and out.

    xi_bar in [0, 1]: 1 leaves the image unchanged, 0 replaces the lesion by pure noise."""
    img = _as_image(image)
    xi = float(np.clip(xi_bar, 0.0, 1.0))
    h = _unit_map(heatmap, img.shape[:2])[:, :, None]
    x = img.astype(np.float64) / 127.5 - 1.0
    eps = _rng(rng).standard_normal(img.shape)
    xs = np.sqrt(xi) * (x * h) + np.sqrt(1 - xi) * (eps * h) + x * (1 - h)
    return np.clip(np.rint((xs + 1.0) * 127.5), 0, 255).astype(np.uint8)


def global_noise(image, rng=0, method: str = "released", xi_bar: float = 0.5,
                 noise_std: float = NOISE_STD) -> np.ndarray:
    """Global-noise ablation: the whole image replaced by released noise, or blended with h = 1."""
    img = _as_image(image)
    if method == "released":
        return _released_noise(img.shape, _rng(rng), noise_std)
    if method == "blend":
        return lesion_noise_blend(img, np.ones(img.shape[:2]), xi_bar, rng)
    raise ValueError(f"unknown method {method!r}; expected 'released' or 'blend'")


def diffusion_xi_bar(k: int, steps: int = 1000, beta_start: float = 1e-5, beta_end: float = 5e-3) -> float:
    """xi_bar_k = prod_{i<=k} (1 - beta_i) of the released add_diffusion_noise sigmoid schedule
    (beta = sigmoid(linspace(-6, 6, steps)) * (beta_end - beta_start) + beta_start); k in 0..steps-1."""
    betas = 1 / (1 + libm.exp(-np.linspace(-6, 6, steps))) * (beta_end - beta_start) + beta_start
    return float(np.cumprod(1 - betas)[int(np.clip(k, 0, steps - 1))])
