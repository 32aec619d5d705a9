"""The native dataset store: a zarr group laid out like diffusion_policy's ReplayBuffer.

`data/<key>` holds arrays of shape (N_total, ...), `meta/episode_ends` the exclusive end index of each
episode (int64). Root attributes make the store self-describing (see `robopolicy.data.spec`).
New stores are zarr v3; v2 stores (diffusion_policy's, directory or `.zip`, Jpeg2k images) open too.
Episodes are appended in place, data first and `episode_ends` last, so an interrupted append leaves
a store whose `episode_ends` still describes only complete episodes (the tail is trimmed on reopen).
"""
from __future__ import annotations

import shutil
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.errors import UnknownCodecError

from robopolicy.data.validate import validate_episode
from robopolicy.errors import DataError

try:  # diffusion_policy compresses images with imagecodecs' Jpeg2k numcodecs codec.
    from imagecodecs.numcodecs import register_codecs as _register_imagecodecs

    _register_imagecodecs()
except ImportError:  # pragma: no cover - imagecodecs is in the `data` extra
    pass

FORMAT_VERSION = 1
_LOWDIM_CHUNK_BYTES = 1 << 20


def is_zip(path: Path) -> bool:
    return path.suffix == ".zip"


def _chunks(shape: tuple[int, ...], dtype: np.dtype, rgb: bool) -> tuple[int, ...]:
    """One frame per chunk for images (random window reads), ~1 MiB of rows for low-dim arrays."""
    if rgb:
        return (1, *shape)
    row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    return (max(1, _LOWDIM_CHUNK_BYTES // row_bytes), *shape)


def looks_like_rgb(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """uint8 HWC with 1, 3 or 4 channels: how every supported format stores camera frames."""
    return dtype == np.uint8 and len(shape) == 3 and shape[-1] in (1, 3, 4)


class ReplayBuffer:
    """Episodes of per-step arrays in one zarr group; see the module docstring for the layout."""

    def __init__(self, root: zarr.Group, path: Path, mode: str, pack_to: Path | None = None) -> None:
        self._root = root
        self.path = path
        self.mode = mode
        self._pack_to = pack_to  # `.zip` stores are built in a directory and packed on close()
        self._ends = np.asarray(root["meta/episode_ends"][:], dtype=np.int64)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        attrs: Mapping[str, Any] | None = None,
        zarr_format: int = 3,
        overwrite: bool = False,
    ) -> ReplayBuffer:
        """Create an empty store. A `.zip` path is written as a directory beside it and zipped by close()."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise DataError(path, None, "destination exists (pass overwrite=True / --overwrite)")
        work = path.parent / f".{path.name}.build-{uuid.uuid4().hex[:8]}" if is_zip(path) else path
        root = zarr.open_group(str(work), mode="w", zarr_format=zarr_format)
        root.require_group("data")
        meta = root.require_group("meta")
        meta.create_array("episode_ends", shape=(0,), chunks=(4096,), dtype="int64", **_compression(zarr_format))
        root.attrs.update({"format_version": FORMAT_VERSION, **dict(attrs or {})})
        return cls(root, path, "a", pack_to=path if is_zip(path) else None)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> ReplayBuffer:
        """Open a directory or `.zip` store, v2 or v3. Mode "a" (append) needs a directory store."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if not path.exists():
            raise DataError(path, None, "no such zarr store")
        if is_zip(path):
            if mode == "a":
                raise DataError(path, None, "a .zip store cannot be appended to; convert it to a directory store")
            if not zipfile.is_zipfile(path):
                raise DataError(path, None, "expected a zip archive holding a zarr store (truncated or corrupt?)")
            store: Any = zarr.storage.ZipStore(str(path), mode="r")
        else:
            store = str(path)
        try:
            root = zarr.open_group(store, mode="r" if mode == "r" else "r+")
        except Exception as exc:  # zarr raises several types for a missing or corrupt group
            raise DataError(path, None, f"not a readable zarr group ({exc})") from exc
        for key in ("data", "meta/episode_ends"):
            if key not in root:
                raise DataError(
                    path, key, "missing; expected a diffusion_policy-style store with data/ and meta/episode_ends"
                )
        rb = cls(root, path, mode)
        rb._validate()
        if mode == "a":
            rb._trim_partial_episode()
        return rb

    def close(self) -> None:
        """Finish the store; for a `.zip` destination, pack the built directory into the archive."""
        if self._pack_to is None:
            return
        work = Path(str(self._root.store.root))
        tmp_zip = self._pack_to.with_name(f".{self._pack_to.name}.zip-{uuid.uuid4().hex[:8]}")
        try:
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_STORED) as zf:
                for file in sorted(work.rglob("*")):
                    if file.is_file():
                        zf.write(file, file.relative_to(work).as_posix())
            tmp_zip.replace(self._pack_to)
        finally:
            tmp_zip.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
        self._pack_to = None

    def __enter__(self) -> ReplayBuffer:
        return self

    def abort(self) -> None:
        """Give up on a `.zip` store being built: delete the build directory, write no archive."""
        if self._pack_to is not None:
            shutil.rmtree(str(self._root.store.root), ignore_errors=True)
            self._pack_to = None

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()

    # ---- reading ------------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return sorted(self._root["data"].array_keys())

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._root.attrs)

    @property
    def zarr_format(self) -> int:
        return int(self._root.metadata.zarr_format)

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        self._root.attrs.update(dict(attrs))

    def array(self, key: str) -> zarr.Array:
        """The zarr array behind `data/<key>`, for lazy reads (e.g. image frames)."""
        if key not in self._root["data"]:
            raise DataError(self.path, f"data/{key}", f"missing; the store has {self.keys}")
        return self._root[f"data/{key}"]

    def episode_slice(self, i: int) -> slice:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range for {self.n_episodes} episodes")
        i %= self.n_episodes
        return slice(int(self._ends[i - 1]) if i else 0, int(self._ends[i]))

    def get_episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        sl = self.episode_slice(i)
        return {k: self.read(k, sl) for k in (keys or self.keys)}

    def read(self, key: str, sl: slice | None = None) -> np.ndarray:
        """Rows `sl` (default: all complete episodes) of one key, loaded into memory."""
        sl = slice(0, self.n_steps) if sl is None else sl
        try:
            return np.asarray(self.array(key)[sl])
        except UnknownCodecError as exc:
            raise DataError(
                self.path, f"data/{key}", f"compressed with an unknown codec ({exc}); install imagecodecs"
            ) from exc
        except DataError:
            raise
        except Exception as exc:
            raise DataError(self.path, f"data/{key}", f"could not be read (corrupt chunk?): {exc}") from exc

    # ---- writing ------------------------------------------------------------------------------
    def add_episode(self, episode: Mapping[str, np.ndarray], check: bool = True) -> None:
        """Append one episode; every array has the episode length as its first axis. `check=False` skips
        validation for episodes the caller has validated already (the convert pipeline)."""
        if self.mode != "a":
            raise DataError(self.path, None, "opened read-only; use ReplayBuffer.open(path, mode='a')")
        arrays = {k: np.asarray(v) for k, v in episode.items()}
        if check:
            self._check_episode(arrays)
        data = self._root["data"]
        if self.n_episodes == 0 and not self.keys:
            fmt = self.zarr_format
            for key, arr in arrays.items():
                rgb = looks_like_rgb(arr.shape[1:], arr.dtype)
                data.create_array(
                    key, shape=(0, *arr.shape[1:]), chunks=_chunks(arr.shape[1:], arr.dtype, rgb),
                    dtype=arr.dtype, **_compression(fmt, rgb),
                )
        for key, arr in arrays.items():
            data[key].append(arr, axis=0)
        new_end = self.n_steps + len(next(iter(arrays.values())))
        self._root["meta/episode_ends"].append(np.asarray([new_end], dtype=np.int64))
        self._ends = np.append(self._ends, np.int64(new_end))

    def _check_episode(self, arrays: dict[str, np.ndarray]) -> None:
        expected = {k: (tuple(a.shape[1:]), str(a.dtype)) for k, a in ((k, self._root[f"data/{k}"]) for k in self.keys)}
        action_key = self.attrs.get("action", {}).get("key", "action")
        validate_episode(self.path, f"episode {self.n_episodes}", arrays, action_key, expected, "the store")

    def _validate(self) -> None:
        ends = self._ends
        if len(ends) and (np.any(np.diff(ends) < 0) or ends[0] < 0):
            raise DataError(self.path, "meta/episode_ends", "expected non-decreasing, non-negative indices")
        for key in self.keys:
            length = self._root[f"data/{key}"].shape[0]
            if length < self.n_steps:
                raise DataError(self.path, f"data/{key}", f"has {length} rows; meta/episode_ends needs {self.n_steps}")

    def _trim_partial_episode(self) -> None:
        """Drop rows an interrupted add_episode wrote past the last complete episode."""
        for key in self.keys:
            arr = self._root[f"data/{key}"]
            if arr.shape[0] > self.n_steps:
                arr.resize((self.n_steps, *arr.shape[1:]))


def _compression(zarr_format: int, rgb: bool = False) -> dict[str, Any]:
    """Blosc/zstd; bit-shuffle helps float low-dim data, images compress faster without it."""
    if zarr_format == 2:
        shuffle = numcodecs.Blosc.NOSHUFFLE if rgb else numcodecs.Blosc.BITSHUFFLE
        return {"compressors": numcodecs.Blosc(cname="zstd", clevel=3 if rgb else 5, shuffle=shuffle)}
    shuffle = "noshuffle" if rgb else "bitshuffle"
    return {"compressors": BloscCodec(cname="zstd", clevel=3 if rgb else 5, shuffle=shuffle)}
