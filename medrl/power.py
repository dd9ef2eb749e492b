"""`python -m medrl.power`: size a study before it runs.

    python -m medrl.power --baseline 0.40 --diff 0.05 [--discordance 0.3]
        items needed to detect a difference of 0.05 over an accuracy of 0.40
    python -m medrl.power --baseline 0.40 --n 100 200 500 [--discordance 0.3]
        the minimum detectable difference and the accuracy interval half-width at each n
    python -m medrl.power --baseline 0.40 --halfwidth 0.03
        items needed for a 95% accuracy interval of +- 0.03

Paired differences: McNemar's test, two-sided, at --alpha and --power (default 5% and 80%;
Connor 1987, medrl/evaluation/power.py). The discordance (the share of items on which the two
models disagree) decides it; without --discordance the models' errors are assumed independent,
psi = p_A (1 - p_B) + p_B (1 - p_A), which overstates the discordance of two versions of one
model and so the items needed (conservative). A study's observed (b + c) / n is a better guess.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from medrl.evaluation.power import (
    independent_discordance,
    items_for_halfwidth,
    mcnemar_items_needed,
    mcnemar_mde,
    mcnemar_mde_independent,
    min_discordant,
    wilson_halfwidth,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medrl.power",
        description="How many items a paired comparison needs to detect a difference in "
        "accuracy (McNemar), what it can detect at n items, and accuracy interval half-widths.",
    )
    parser.add_argument(
        "--baseline", type=float, required=True, help="accuracy of the baseline model (0-1)"
    )
    question = parser.add_mutually_exclusive_group(required=True)
    question.add_argument("--diff", type=float, help="difference in accuracy to detect")
    question.add_argument(
        "--n", type=int, nargs="+", help="numbers of items: the detectable difference at each"
    )
    question.add_argument("--halfwidth", type=float, help="wanted 95%% interval half-width")
    parser.add_argument(
        "--discordance",
        type=float,
        help="share of items on which the two models disagree, (b + c) / n; default: "
        "independent errors at the baseline and baseline + diff accuracies (conservative)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="two-sided level (0.05)")
    parser.add_argument("--power", type=float, default=0.8, help="power (0.8)")
    return parser


def items_needed_text(args: argparse.Namespace) -> str:
    """Items for a difference of --diff over --baseline, and what else holds at that n."""
    other = args.baseline + args.diff
    if not 0.0 <= other <= 1.0:
        raise ValueError(f"baseline + diff = {other:g} is not an accuracy in [0, 1]")
    psi, source = _discordance(args, other)
    n = mcnemar_items_needed(args.diff, psi, args.alpha, args.power)
    return "\n".join(
        [
            f"Paired items needed to detect {args.diff:+g} over an accuracy of "
            f"{args.baseline:g} ({_design(args)}): {n}",
            f"  discordance {psi:.3f} ({source})",
            f"  at n = {n} the accuracy's 95% Wilson interval is about "
            f"+-{wilson_halfwidth(args.baseline, n):.3f} at {args.baseline:g}",
        ]
    )


def detectable_text(args: argparse.Namespace) -> str:
    """A table: per n, the minimum detectable difference and the accuracy half-width."""
    if args.discordance is None:
        source = (
            "independent errors at the baseline and baseline + difference accuracies "
            "(conservative: paired models usually agree more)"
        )
    else:
        source = f"discordance {args.discordance:g}, as given"
    what = "improvement" if args.discordance is None else "difference"
    lines = [
        f"Minimum detectable {what} over an accuracy of {args.baseline:g} "
        f"({_design(args)}; {source}):",
        "",
        "| n | min. detectable diff | accuracy ± (95% Wilson half-width) |",
        "| ---: | ---: | ---: |",
    ]
    for n in args.n:
        if args.discordance is None:
            mde = mcnemar_mde_independent(n, args.baseline, args.alpha, args.power)
        else:
            mde = mcnemar_mde(n, _checked_share(args.discordance), args.alpha, args.power)
        cell = f"{mde:.3f}" if math.isfinite(mde) else _none(n, args)
        lines.append(f"| {n} | {cell} | {wilson_halfwidth(args.baseline, n):.3f} |")
    return "\n".join(lines)


def halfwidth_text(args: argparse.Namespace) -> str:
    n = items_for_halfwidth(args.baseline, args.halfwidth)
    return (
        f"Items for a 95% Wilson interval of +-{args.halfwidth:g} around an accuracy of "
        f"{args.baseline:g}: {n}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 with a message on stderr for a bad value)."""
    args = build_parser().parse_args(argv)
    try:
        _checked_share(args.baseline, "--baseline")
        if args.diff is not None:
            text = items_needed_text(args)
        elif args.n is not None:
            text = detectable_text(args)
        else:
            text = halfwidth_text(args)
    except ValueError as err:
        print(f"medrl.power: error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _discordance(args: argparse.Namespace, other: float) -> tuple[float, str]:
    if args.discordance is not None:
        return _checked_share(args.discordance), "as given"
    psi = independent_discordance(args.baseline, other)
    return psi, (
        f"independent errors: {args.baseline:g} * {1 - other:g} + {other:g} * "
        f"{1 - args.baseline:g}; conservative, paired models usually agree more: pass a "
        "study's observed (b + c) / n as --discordance"
    )


def _design(args: argparse.Namespace) -> str:
    return f"McNemar, {args.power:.0%} power, {args.alpha:g} two-sided"


def _none(n: int, args: argparse.Namespace) -> str:
    if args.discordance is None:
        return "none"
    needed = min_discordant(n, args.alpha, args.power)
    return f"none (needs discordance >= {needed / n:.3f})" if needed <= n else "none"


def _checked_share(value: float, flag: str = "--discordance") -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{flag} must be a share in [0, 1], got {value}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
