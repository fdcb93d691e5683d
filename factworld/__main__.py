"""``python -m factworld train --out neurotrace/data/models`` / ``python -m factworld evaluate DIR``."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers

from factworld import evaluate as factworld_eval
from factworld import train as factworld_train
from neurotrace.lab.errors import InputError


def main(argv: Sequence[str] | None = None) -> int:
    """``train --out DIR`` builds all four models; ``evaluate DIR`` reprints a model's accuracy."""
    parser = argparse.ArgumentParser(prog="python -m factworld", description="Build or evaluate the embedded fact-world models.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train fact-gpt2, fact-gpt2-cyber, fact-bert, fact-bert-cyber")
    train.add_argument("--out", type=Path, required=True, help="parent directory of the model directories")
    train.add_argument("--seed", type=int, default=0, help="world + training seed (default 0)")
    train.add_argument("--only", nargs="*", default=None, help="train only these models (tuned need their base)")
    evaluate = sub.add_parser("evaluate", help="print accuracy of a saved model directory")
    evaluate.add_argument("model_dir", type=Path)
    evaluate.add_argument("--bridge", action="store_true", help="also try TransformerBridge.boot_transformers")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    try:
        if args.command == "train":
            factworld_train.train_all(args.out, seed=args.seed, only=args.only, log=lambda s: print(s, flush=True))
            return 0
        report = factworld_eval.evaluate_dir(args.model_dir)
        print(report.model_dump_json(indent=2) if args.json else factworld_eval.format_report(report))
        if args.bridge:
            print("TransformerBridge:", factworld_eval.check_bridge(args.model_dir))
        return 0
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
