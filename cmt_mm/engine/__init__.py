"""Importing this package registers cmt_mm's training components."""
from .optimizers import *  # noqa: F401,F403
