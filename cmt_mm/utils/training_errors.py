"""Errors that end a training run for a reason the run itself found (light: tools/train.py
catches them before anything heavy is imported)."""


class TrainingDivergedError(RuntimeError):
    """The loss stopped being finite; the message names the iteration and the loss terms."""
