"""Induction: learn instructional strategies from real multi-turn dialogues.

The loaders (`induction.loaders`) read real dialogue files into (history, follow-up) pairs.
"""

from induction.loaders import (
    FORMATS,
    Dialogue,
    LoadResult,
    NotDialogueFile,
    Pair,
    Turn,
    detect_format,
    load,
    pairs_of,
)

__all__ = [
    "FORMATS",
    "Dialogue",
    "LoadResult",
    "NotDialogueFile",
    "Pair",
    "Turn",
    "detect_format",
    "load",
    "pairs_of",
]
