"""Command line: `python -m arhmm_eqx demo`."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="arhmm-eqx", description="Sticky HDP AR-HMMs fitted by Gibbs sampling.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate a dataset from a known AR-HMM, fit it, and report the result")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--frames", type=int, default=2000, help="frames per sequence")
    demo.add_argument("--sequences", type=int, default=4)
    demo.add_argument("--iters", type=int, default=150, help="Gibbs sweeps")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        if args.frames < 10 or args.sequences < 1 or args.iters < 1:
            parser.error("--frames must be >= 10, --sequences and --iters >= 1")
        run_demo(seed=args.seed, num_sequences=args.sequences, num_frames=args.frames, num_iters=args.iters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
