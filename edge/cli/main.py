"""Entry point of ``lemctl``: builds the argument parser from the command-group modules."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes ``register(subparsers)``; the parser it adds sets ``func`` to a callable
# taking the parsed namespace and returning the process exit status.
COMMAND_MODULES: tuple[str, ...] = (
    "edge.cli.settle",
    "edge.cli.window",
    "edge.cli.schedule",
    "edge.cli.ledger",
    "edge.cli.meter",
    "edge.cli.powerchain",
    "edge.cli.node",
    "edge.cli.testnet",
    "edge.cli.privacy",
    "edge.cli.member",
    "edge.cli.cda",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lemctl", description="lem-edge technician and auditor tool"
    )
    parser.add_argument(
        "--config", help="path of the node's lemd.toml (commands that talk to a node)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
