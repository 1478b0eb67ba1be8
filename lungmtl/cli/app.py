"""``lungmtl``'s entry point: parse, check ``--out``, run the verb; input errors end in one line."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from . import commands
from .parser import build_parser


def _check_out(args) -> None:
    """Refuse an ``--out`` of the wrong kind up front: an existing file where a verb writes a
    folder, an existing folder where it writes one file."""
    out = getattr(args, "out", None)
    if not out:
        return
    p = Path(out)
    if args.fn in (commands._data_build, commands._export, commands._compare, commands._calibrate):
        if p.is_dir():
            raise InputError(p, "--out names an existing folder; give a file name")
    elif p.exists() and not p.is_dir():
        raise InputError(p, "--out names an existing file; give a folder (new or existing)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        _check_out(args)
        return args.fn(args)
    except InputError as e:
        print(f"lungmtl: error: {e}", file=sys.stderr)
        return 2
