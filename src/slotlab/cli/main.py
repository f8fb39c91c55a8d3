"""The ``slotlab`` command: parse the command line, run the command, turn a fault into one line and an exit code.

Every command lives in a module named after it (``slotlab.cli.<command>``) with ``add_<command>`` (its arguments) and
``cmd_<command>`` (parse nothing more, call the library); shared options are declared once in
:mod:`slotlab.cli.options`.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
from pathlib import Path
from typing import NoReturn

from slotlab.cli.app import add_app
from slotlab.cli.compose import add_compose
from slotlab.cli.concepts import add_concepts
from slotlab.cli.data import add_data
from slotlab.cli.demo import add_demo
from slotlab.cli.edit import add_edit
from slotlab.cli.eval import add_eval
from slotlab.cli.fid import add_fid
from slotlab.cli.options import check_numbers, check_outputs
from slotlab.cli.plot import add_plot
from slotlab.cli.presets import add_presets
from slotlab.cli.probe import add_probe
from slotlab.cli.reconstruct import add_reconstruct
from slotlab.cli.train import add_train
from slotlab.cli.visualize import add_visualize
from slotlab.errors import SlotlabError

COMMANDS = (
    add_train,
    add_eval,
    add_demo,
    add_visualize,
    add_reconstruct,
    add_concepts,
    add_compose,
    add_edit,
    add_fid,
    add_probe,
    add_presets,
    add_data,
    add_plot,
    add_app,
)


class _Parser(argparse.ArgumentParser):
    """argparse with its own errors (a missing argument, an unknown option, a bad choice) as one line, like every
    other error; the usage it would print is one ``--help`` away, and the subcommands' parsers are of this class too
    (``add_subparsers`` makes them so)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.set_defaults(_prog=self.prog)  # the innermost parser's wins: `slotlab data info` for `data info ...`

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("slotlab").strip()
        where = f"{command}: " if command else ""
        sys.exit(_error(f"{where}{message} (see '{self.prog} --help')"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="slotlab", description="Object-centric learning with Slot Attention and Latent Slot Diffusion."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _version() -> str:
    from slotlab import __version__

    return f"slotlab {__version__}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; key=value overrides may also come after options (``train P --out D a.b=1``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra and hasattr(args, "overrides") and not any(x.startswith("-") for x in extra):
        bad = next(x for x in extra if "=" not in x)  # load_config's words for one before the options
        sys.exit(_error(f"override {bad!r} is not of the form key.sub=value"))
    elif extra:
        command = args._prog.removeprefix("slotlab ")  # `train`, `data generate`
        sys.exit(_error(f"{command}: unrecognized arguments: {' '.join(extra)} (see '{args._prog} --help')"))
    if _is_override(getattr(args, "preset", None)):  # `train --out D --resume X.ckpt a.b=1`: no preset
        args.overrides.append(args.preset)
        args.preset = None
    if _is_override(getattr(args, "resume", None)):  # `--resume a.b=1`: a bare --resume, then an override
        args.overrides.append(args.resume)
        args.resume = "last"
    if hasattr(args, "overrides"):  # in the order given: a later value of a key wins
        given = sys.argv[1:] if argv is None else [str(a) for a in argv]
        args.overrides.sort(key=lambda item: _position(given, item))
    return args


_OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")


def _is_override(word: str | None) -> bool:
    """``key.sub=value`` rather than a preset or checkpoint path (which may hold a '=': ``epoch=3-step=9.ckpt``)."""
    return bool(
        word and _OVERRIDE.match(word) and not word.endswith((".ckpt", ".yaml", ".yml")) and not Path(word).exists()
    )


def _position(argv: list[str], item: str) -> int:
    """Where ``item`` stands on the command line (``--resume=a.b=1`` holds one)."""
    for i, word in enumerate(argv):
        if word == item or (word.startswith("--") and word.endswith(f"={item}")):
            return i
    return len(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_numbers(args)
        check_outputs(args)
        return args.func(args)
    except SlotlabError as e:
        return _error(str(e))
    except FileNotFoundError as e:
        return _error(f"file not found: {e.filename or e}")
    except OSError as e:  # a full disk, an unwritable output, a folder where a file should be
        where = f": {e.filename}" if e.filename else ""
        return _error(f"{e.strerror or e}{where}" + (" (the disk is full)" if e.errno == errno.ENOSPC else ""))
    except KeyboardInterrupt:
        print("slotlab: interrupted", file=sys.stderr)
        return 130


def _error(message: str) -> int:
    print(f"slotlab: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
