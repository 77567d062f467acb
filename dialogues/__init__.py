"""Seed dialogues in, output documents out: loading, validation and atomic writes."""

from dialogues.output import OutputError, check_writable, write_json_atomic
from dialogues.seeds import Seed, SeedError, SeedMessage, load_seed, parse_seed

__all__ = [
    "OutputError",
    "Seed",
    "SeedError",
    "SeedMessage",
    "check_writable",
    "load_seed",
    "parse_seed",
    "write_json_atomic",
]
