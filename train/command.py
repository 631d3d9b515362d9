"""`edgekit train TASK [--data ...]`: maps the CLI arguments onto train_model()."""

from __future__ import annotations

from pathlib import Path

from edgekit.train import train_model

# CLI defaults that mean "not chosen" for tasks where the flag does not apply.
_TASK_OPTIONS = {
    "text": ("text_column", "label_column", "batch_size", "max_samples"),
    "image": ("backbone", "weights", "input_size", "fine_tune_epochs", "batch_size", "max_samples"),
    "speech": ("features", "batch_size", "max_samples"),
}
_ALL_OPTIONS = ("text_column", "label_column", "backbone", "weights", "input_size",
                "fine_tune_epochs", "features", "batch_size", "max_samples")


def run(args) -> int:
    options = {name: getattr(args, name, None) for name in _ALL_OPTIONS}
    if args.task != "image":  # --backbone/--weights carry CLI defaults; they only matter for images
        options.pop("backbone")
        options.pop("weights")
    for name in _ALL_OPTIONS:
        if name in options and options[name] is not None and name not in _TASK_OPTIONS[args.task]:
            from edgekit.core import UserError

            raise UserError(f"--{name.replace('_', '-')} does not apply to the {args.task} task")
    out = Path(args.out) if args.out else Path("models") / args.task
    train_model(args.task, out=out, data=args.data, epochs=args.epochs, seed=args.seed, **options)
    return 0
