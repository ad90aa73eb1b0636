"""The toy world's developer commands, added to ``bench`` through the ``bench_commands`` hook."""

from __future__ import annotations

import argparse
from typing import Any

from bench.hookspecs import hookimpl
from toytrain.arguments import add_gates_arguments, add_train_arguments


def _train(args: argparse.Namespace) -> int:
    from toytrain.cli import run

    return run(args)


def _gates(args: argparse.Namespace) -> int:
    from toytrain.gates import run

    return run(args)


@hookimpl
def bench_commands(subparsers: Any) -> None:
    """``bench toy-train STAGE`` and ``bench toy-gates``."""
    train = subparsers.add_parser("toy-train", help="train one stage of the toy world (developer tool)")
    add_train_arguments(train)
    train.set_defaults(func=_train)
    gates = subparsers.add_parser("toy-gates", help="measure the toy world's quality gates (developer tool)")
    add_gates_arguments(gates)
    gates.set_defaults(func=_gates)
