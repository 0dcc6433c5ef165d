"""``python -m kwx.docs [DIRECTORY]``: write the generated reference pages (default docs/reference)."""

import sys
from pathlib import Path

from kwx.docs.build import write_reference

for written in write_reference(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference")):
    print(f"wrote {written}")
