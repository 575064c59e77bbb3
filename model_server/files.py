"""Reading the text files a person names (command-line inputs, evaluation sets): UTF-8, or one clear error.

Python's UnicodeDecodeError names neither the file nor the fix, so every such read goes through
`read_utf8`; OSError (missing, unreadable, a directory) already names the file and is left as it is.
"""

from __future__ import annotations

from pathlib import Path


def read_utf8(path: Path | str) -> str:
    """The text of `path`; ValueError naming the file and the fix when it is not UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8, "
                         f"e.g. `iconv -f WINDOWS-1256 -t UTF-8 {path} > fixed.txt`") from None
