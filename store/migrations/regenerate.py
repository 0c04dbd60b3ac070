"""Regenerate `0001_initial_schema.py` from the models (before the first release only).

    python -m store.migrations.regenerate

Until Modelfleet has a release with data to keep, the initial schema is rewritten whenever a table
changes; afterwards each change gets its own revision (`alembic revision --autogenerate`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from store.db import make_engine
from store.migrate import MIGRATIONS, alembic_config

INITIAL = MIGRATIONS / "versions" / "0001_initial_schema.py"


def main() -> None:
    INITIAL.unlink(missing_ok=True)
    seed = MIGRATIONS / "versions" / "0002_seed_audit_head.py"
    parked = seed.with_suffix(".parked")
    seed.rename(parked)  # autogenerate compares against an empty database: only 0001 may exist
    try:
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'empty.db'}")
            command.revision(
                alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001"
            )
    finally:
        parked.rename(seed)
    # Alembic renders JSONB's text type as a bare `Text()`; the module imports sqlalchemy as `sa`.
    INITIAL.write_text(INITIAL.read_text().replace("astext_type=Text()", "astext_type=sa.Text()"))
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", str(INITIAL)], check=True)
    subprocess.run([sys.executable, "-m", "ruff", "check", "--fix", "--quiet", str(INITIAL)], check=False)


if __name__ == "__main__":
    main()
