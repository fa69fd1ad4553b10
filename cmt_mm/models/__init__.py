"""Importing this package registers cmt_mm's models (``cmt_mm.CMT``, ``cmt_mm.CMTClsHead``)."""
from .backbones import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
