"""Importing this package registers cmt_mm's data transforms (``cmt_mm.SafeLoadImageFromFile``)."""
from .transforms import *  # noqa: F401,F403
