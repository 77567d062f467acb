"""Where the tests find the shared real data: `../shared/data` from the repository root.

The folder is not part of the repository; a test that needs one of its files skips when it is
absent. Every test module takes the path from here (`tests/test_data_paths.py` checks it), so a
checkout anywhere finds the data beside it.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository root."""
DATA = REPO.parent / "shared" / "data"
"""The shared data folder, `../shared/data` from the repository root."""
