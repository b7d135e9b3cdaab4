"""Unpaired hazy/clear dataset with CUT's augmentation, drawn from numpy so both frameworks see the same batches.

Layout: two folders given directly (hazy, clear), or one dataset root in CycleGAN's layout (`trainA` = hazy,
`trainB` = clear). Each epoch visits every hazy image once in a shuffled order and pairs it with a clear image
drawn at random (CUT's unaligned dataset with serial_batches off). Each image is resized to load_size x
load_size (bicubic), randomly cropped to crop_size and randomly flipped horizontally.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from singan_common import rng as rngmod
from singan_common.images import ImageError, list_images, read_rgb, resize, to_network, to_uint8


class DatasetError(ValueError):
    """A dataset folder that cannot be trained on; the message names the folder and the problem."""


def resolve_folders(hazy: str | Path, clear: str | Path | None = None) -> tuple[Path, Path]:
    """(hazy_dir, clear_dir); with clear None, `hazy` is a CycleGAN-style root holding trainA/trainB."""
    hazy = Path(hazy)
    if clear is None:
        a, b = hazy / "trainA", hazy / "trainB"
        if not (a.is_dir() and b.is_dir()):
            raise DatasetError(f"{hazy}: expected trainA/ (hazy) and trainB/ (clear) inside, or give --clear")
        return a, b
    return hazy, Path(clear)


def _images_in(folder: Path, role: str) -> list[Path]:
    try:
        files = list_images(folder)
    except ImageError as exc:
        raise DatasetError(f"{role} {exc}") from None
    if not files:
        raise DatasetError(f"{role} folder {folder}: no image files (.png, .jpg, ...) in it")
    return files


@dataclass
class Batch:
    hazy: np.ndarray  # float32 (B, 3, crop, crop) in [-1, 1]
    clear: np.ndarray
    hazy_paths: list[Path]
    clear_paths: list[Path]


class UnpairedDataset:
    """Deterministic unpaired sampling: batch k of epoch e is a pure function of (seed, e, k)."""

    def __init__(self, hazy_dir: str | Path, clear_dir: str | Path, load_size: int, crop_size: int, flip: bool,
                 seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.hazy_dir, self.clear_dir = Path(hazy_dir), Path(clear_dir)
        self.hazy_paths = _images_in(self.hazy_dir, "hazy")
        self.clear_paths = _images_in(self.clear_dir, "clear")
        self.load_size, self.crop_size, self.flip, self.seed = load_size, crop_size, flip, seed
        if not 0 <= rank < world_size:
            raise DatasetError(f"rank {rank} is outside world size {world_size}")
        self.rank, self.world_size = rank, world_size
        self._cache: dict[Path, np.ndarray] = {}
        for p in (*self.hazy_paths, *self.clear_paths):
            self._load(p)  # fail now, naming the file, rather than mid-epoch

    def __len__(self) -> int:
        return max(len(self.hazy_paths), len(self.clear_paths))

    def _load(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            rgb = read_rgb(path, min_size=1)
            # Resizing to load_size first (as CUT does) makes any source size valid; refuse only images
            # so small that the crop would be mostly interpolation.
            if min(rgb.shape[:2]) < self.crop_size // 4:
                raise DatasetError(f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}, too small for crop "
                                   f"{self.crop_size} (needs at least {self.crop_size // 4} pixels per side)")
            # uint8 keeps the cache at a quarter of float32's size; resize() already quantised to 8 bits.
            self._cache[path] = to_uint8(resize(rgb, (self.load_size, self.load_size)))
        return self._cache[path].astype(np.float32) / 255.0

    def epoch_pairs(self, epoch: int) -> list[tuple[int, int, int]]:
        """(global item, hazy index, clear index) for every item of `epoch`, after sharding to this rank.

        The global order is drawn once per epoch; rank r takes items r, r + W, r + 2W, ... of it, padded by
        wrapping so every rank has the same count (as torch's DistributedSampler)."""
        g = rngmod.generator(self.seed, rngmod.EPOCH_ORDER, epoch)
        n = len(self)
        order = g.permutation(n)
        clear_idx = g.integers(0, len(self.clear_paths), size=n)
        pairs = [(k, int(i % len(self.hazy_paths)), int(clear_idx[k])) for k, i in enumerate(order)]
        per_rank = -(-n // self.world_size)
        padded = (pairs * (1 + per_rank * self.world_size // max(n, 1)))[: per_rank * self.world_size]
        return padded[self.rank:: self.world_size]

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.epoch_pairs(1)) // batch_size)

    def _augment(self, img: np.ndarray, g: np.random.Generator) -> np.ndarray:
        top = int(g.integers(0, self.load_size - self.crop_size + 1))
        left = int(g.integers(0, self.load_size - self.crop_size + 1))
        flip = bool(g.random() < 0.5) if self.flip else False
        out = img[top: top + self.crop_size, left: left + self.crop_size]
        if flip:
            out = out[:, ::-1]
        return to_network(out)

    def batch(self, epoch: int, index: int, batch_size: int) -> Batch:
        """Batch `index` (0-based) of `epoch` (1-based); the last batch of an epoch may be smaller."""
        pairs = self.epoch_pairs(epoch)[index * batch_size: (index + 1) * batch_size]
        if not pairs:
            raise IndexError(f"epoch {epoch} has no batch {index}")
        hazy, clear = [], []
        for item, a, b in pairs:
            # Keyed by the global item, not the rank, so a sharded run crops exactly as a single process.
            # Hazy and clear crops draw independently, as CUT transforms A and B separately.
            hazy.append(self._augment(self._load(self.hazy_paths[a]),
                                      rngmod.generator(self.seed, rngmod.AUGMENT, epoch, item, 0)))
            clear.append(self._augment(self._load(self.clear_paths[b]),
                                       rngmod.generator(self.seed, rngmod.AUGMENT, epoch, item, 1)))
        return Batch(hazy=np.stack(hazy), clear=np.stack(clear),
                     hazy_paths=[self.hazy_paths[a] for _, a, _ in pairs],
                     clear_paths=[self.clear_paths[b] for _, _, b in pairs])
