"""Data files shipped inside the package (see SOURCES.md in this folder for their origin and licence).

tinygpt reads its data from here at run time, never from the network or from a shared folder
outside the package, so the examples and tests work offline on a fresh install.
"""
import pathlib
from ..errors import InputError, InputTypeError, MissingFileError

ASSETS_DIR = pathlib.Path(__file__).resolve().parent


def asset_path(name: str) -> pathlib.Path:
    """Return the path of the shipped data file `name` (e.g. "the-verdict.txt").

    Raises FileNotFoundError naming the file and this folder when it is missing (for example a
    wheel built without its package data), instead of a bare error later at `open()`.
    """
    if not isinstance(name, str):
        raise InputTypeError(f"asset name must be a str such as 'the-verdict.txt', got {type(name).__name__}")
    # Only plain file names: an asset name must not reach outside this folder ("../x", "/etc/x").
    if not name or pathlib.PurePath(name).name != name or name in (".", ".."):
        raise InputError(f"asset name must be a plain file name inside {ASSETS_DIR}, got {name!r}")
    path = ASSETS_DIR / name
    if not path.is_file():
        shipped = sorted(p.name for p in ASSETS_DIR.iterdir() if p.is_file() and not p.name.startswith("_"))
        raise MissingFileError(
            f"tinygpt asset {name!r} not found in {ASSETS_DIR} (shipped files: {', '.join(shipped)}); "
            "reinstall tinygpt with its package data"
        )
    return path
