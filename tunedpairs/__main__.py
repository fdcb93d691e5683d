"""``python -m tunedpairs train --out neurotrace/data/adapters [--only NAME ...]``."""

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers

from tunedpairs.recipes import RECIPES
from tunedpairs.train import train_one


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunedpairs", description="Train the shipped LoRA adapters.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train adapters: " + ", ".join(RECIPES))
    train.add_argument("--out", type=Path, required=True, help="parent directory of the adapter folders")
    train.add_argument("--only", nargs="*", default=None, help="train only these adapters")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    for name, recipe in RECIPES.items():
        if args.only and name not in args.only:
            continue
        train_one(recipe, args.out, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
