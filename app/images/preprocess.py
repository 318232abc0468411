"""Preprocessing equal to torchvision's `weights.transforms()` for classification weights.

The same operations in the same order as `torchvision.transforms._presets.ImageClassification`
on a PIL image (resize the short side with Pillow, centre crop, scale to [0, 1], normalise), so
the tensors agree with torchvision's reference to float rounding (a test holds us to it). Written
out rather than calling the torchvision module so the steps and their costs are ours to see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image

if TYPE_CHECKING:
    from torchvision.transforms._presets import ImageClassification

# torchvision's InterpolationMode values (its enum's `.value`) as Pillow's filters: read by value
# so that this module needs no torchvision at run time.
_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


# Beyond this aspect ratio (long side of the resized image over the resize target), resize only
# the cropped region; photographs stay well below it and take the exact path.
_MAX_ASPECT = 4


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """torchvision's rule for a one-number resize: the short side becomes `short_side`, the long
    side keeps the aspect ratio, truncated to an integer."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = short_side, int(short_side * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


@dataclass(frozen=True)
class Preprocessor:
    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: Image.Resampling

    @classmethod
    def from_transforms(cls, transforms: ImageClassification) -> Preprocessor:
        mean = tuple(float(m) for m in transforms.mean)
        std = tuple(float(s) for s in transforms.std)
        return cls(
            resize_size=int(transforms.resize_size[0]),
            crop_size=int(transforms.crop_size[0]),
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            resample=_PIL_RESAMPLE[transforms.interpolation.value],
        )

    def to_dict(self) -> dict[str, object]:
        """The plain form a model manifest records (app/model/ir): read back by `from_dict`."""
        names = {mode: name for name, mode in _PIL_RESAMPLE.items()}
        return {
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": names[self.resample],
        }

    @classmethod
    def from_dict(cls, spec: dict[str, object]) -> Preprocessor:
        """Raises KeyError, TypeError or ValueError on a malformed record."""
        mean = [float(v) for v in spec["mean"]]  # type: ignore[attr-defined]
        std = [float(v) for v in spec["std"]]  # type: ignore[attr-defined]
        if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
            raise ValueError("mean and std need three values each, std above 0")
        resize, crop = int(spec["resize_size"]), int(spec["crop_size"])  # type: ignore[call-overload]
        if not 0 < crop <= resize:
            raise ValueError(f"crop_size {crop} must be positive and at most resize_size {resize}")
        return cls(
            resize_size=resize,
            crop_size=crop,
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            resample=_PIL_RESAMPLE[str(spec["interpolation"])],
        )

    def __call__(self, image: Image.Image) -> npt.NDArray[np.float32]:
        """RGB PIL image -> float32 array (3, crop, crop), normalised, C-contiguous."""
        width, height = image.size
        new_w, new_h = resized_size(width, height, self.resize_size)
        crop = self.crop_size
        # Same rounding as torchvision's center_crop; Pillow fills outside the image with 0,
        # as torchvision's padding does.
        top = round((new_h - crop) / 2.0)
        left = round((new_w - crop) / 2.0)
        if max(new_w, new_h) <= _MAX_ASPECT * self.resize_size:
            resized = image.resize((new_w, new_h), self.resample)
            image = resized.crop((left, top, left + crop, top + crop))
        else:
            # A very long, thin image (a 10000x1 strip) would resize to hundreds of megapixels
            # only to be cropped: resample just the region that survives the crop instead.
            # Same filter scale; values may differ from the reference by 1/255 on a few pixels.
            sx, sy = width / new_w, height / new_h
            box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
            image = image.resize((crop, crop), self.resample, box=box)
        # numpy for the arithmetic: single-threaded, so decode threads never start an engine's
        # thread pool behind the model's back. Same float32 operations in the same
        # order as torchvision (x / 255, - mean, / std), hence the same bits.
        pixels = np.asarray(image, dtype=np.uint8).astype(np.float32)
        pixels /= np.float32(255)
        pixels -= np.asarray(self.mean, dtype=np.float32)
        pixels /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))
