"""`edgekit train TASK [--data ...]`: maps the CLI arguments onto train_model()."""

from __future__ import annotations

from pathlib import Path

from edgekit.train import KINDS, OPTIONS, train_model


def run(args) -> int:
    options = {name: getattr(args, name, None) for name in OPTIONS}
    if args.task != "image":  # --backbone/--weights carry CLI defaults; they only matter for images
        options.pop("backbone")
        options.pop("weights")
    for name in OPTIONS:  # the options each kind takes: train/__init__.py KINDS
        if name in options and options[name] is not None and name not in KINDS[args.task].options:
            from edgekit.core import UserError

            raise UserError(f"--{name.replace('_', '-')} does not apply to the {args.task} task")
    out = Path(args.out) if args.out else Path("models") / args.task
    train_model(args.task, out=out, data=args.data, epochs=args.epochs, seed=args.seed, **options)
    return 0
