"""Format registry, auto-detection and the convert pipeline (read → check → write to a temp path → verify → rename)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from robopolicy.atomic import atomic_output
from robopolicy.data.convert import dp_zarr, lerobot, minari, rlds, robomimic
from robopolicy.data.convert.base import Episode, Format, Source, Summary
from robopolicy.data.validate import Schema, validate_episode
from robopolicy.errors import DataError

FORMATS: dict[str, Format] = {
    f.name: f for f in (dp_zarr.FORMAT, robomimic.FORMAT, lerobot.FORMAT, minari.FORMAT, rlds.FORMAT)
}

__all__ = ["FORMATS", "Summary", "convert", "detect_format", "open_source", "output_format"]


def detect_format(path: Path) -> Format:
    """The registered format that recognises `path`; DataError naming the candidates otherwise."""
    if not path.exists():
        raise DataError(path, None, "no such file or directory")
    for fmt in FORMATS.values():
        if fmt.detect(path):
            return fmt
    raise DataError(path, None, f"unrecognised dataset format; expected one of: {', '.join(FORMATS)}")


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise DataError(name, None, f"unknown format; expected one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def output_format(dst: Path, name: str | None) -> Format:
    """The format to write: named explicitly, or implied by the destination's suffix."""
    if name is not None:
        fmt = get_format(name)
    else:
        matches = [f for f in FORMATS.values() if f.write and any(dst.name.endswith(s) for s in f.suffixes)]
        if not matches:
            writable = ", ".join(f.name for f in FORMATS.values() if f.write)
            raise DataError(dst, None, f"cannot tell the output format from the name; pass --to ({writable})")
        fmt = matches[0]
    if fmt.write is None:
        raise DataError(dst, None, f"format {fmt.name!r} can be read but not written")
    return fmt


def open_source(
    path: str | Path, fmt: str | None = None, filter_key: str | None = None, recipe: str | Path | None = None
) -> Source:
    """Open `path` as `fmt` (default: detected); `filter_key` is robomimic's, `recipe` the RLDS key map."""
    path = Path(path)
    chosen = get_format(fmt) if fmt else detect_format(path)
    kwargs: dict[str, Any] = {}
    for option, value, owner in (("filter_key", filter_key, "robomimic"), ("recipe", recipe, "rlds")):
        if value is None:
            continue
        if chosen.name != owner:
            raise DataError(path, option, f"--{option.replace('_', '-')} applies to {owner} only, not {chosen.name}")
        kwargs[option] = value
    return chosen.open(path, **kwargs)


class _Tally:
    """Validates every episode as it streams past (writers need not) and records what the writer was given."""

    def __init__(self) -> None:
        self.n_episodes = 0
        self.n_frames = 0
        self.features: Schema = {}

    def wrap(self, source: Source, total: int, progress: bool) -> Iterator[Episode]:
        action_key = source.info.action_key
        for label, episode in tqdm(source.episodes(), total=total, unit="ep", disable=not progress, desc="convert"):
            self.features = validate_episode(source.path, label, episode, action_key, self.features)
            self.n_episodes += 1
            self.n_frames += len(episode[action_key])
            yield episode


def _verify(src: Summary, tally: _Tally, out: Summary, mapping: dict[str, str], dst: Path) -> None:
    expected = [("episodes", src.n_episodes, tally.n_episodes, out.n_episodes),
                ("frames", src.n_frames, tally.n_frames, out.n_frames)]
    for what, claimed, streamed, written in expected:
        if claimed is None:  # not in the source's metadata: only what was read and written can be compared
            claimed = streamed
        if not claimed == streamed == written:
            raise DataError(dst, None, f"{what}: source metadata says {claimed}, read {streamed}, wrote {written}")
    for key, (shape, dtype) in tally.features.items():
        out_key = mapping.get(key, key)
        if out.features.get(out_key) != (shape, dtype):
            raise DataError(dst, out_key, f"written as {out.features.get(out_key)}; expected {(shape, dtype)}")


def convert(
    src: str | Path,
    dst: str | Path,
    src_format: str | None = None,
    dst_format: str | None = None,
    overwrite: bool = False,
    filter_key: str | None = None,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    recipe: str | Path | None = None,
    wrap: Callable[[Source], Source] | None = None,
) -> tuple[Summary, Summary]:
    """Convert `src` to `dst`; return (source summary, written summary). Nothing is left at `dst` on error.
    `wrap` transforms the opened source before it is read (observations regenerated from states)."""
    src, dst = Path(src), Path(dst)
    out_fmt = output_format(dst, dst_format)
    if dst.exists() and not overwrite:
        raise DataError(dst, None, "destination exists; pass --overwrite to replace it")
    if dst.exists() and dst.resolve() == src.resolve():
        raise DataError(dst, None, "destination is the source")
    with open_source(src, src_format, filter_key, recipe) as opened:
        source = wrap(opened) if wrap is not None else opened
        src_summary = source.summary()
        tally = _Tally()
        with atomic_output(dst, overwrite=overwrite) as tmp:
            episodes = tally.wrap(source, src_summary.n_episodes, progress)
            mapping = out_fmt.write(source, episodes, tmp, dict(options or {}))
            with out_fmt.open(tmp) as written:
                out_summary = written.summary()
            _verify(src_summary, tally, out_summary, mapping, dst)
    out_summary.path = str(dst)
    return src_summary, out_summary
