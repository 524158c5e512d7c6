"""Start-up migration: Alembic is skipped only when the store holds what the stamp says."""

from __future__ import annotations

import json
import shutil
import sqlite3

from garrison.db.migrate import upgrade


def test_stamp_skips_alembic_only_when_the_store_matches(tmp_path, migrated_templates):
    db = tmp_path / "garrison.db"
    shutil.copy(migrated_templates["sqlite"], db)
    url = f"sqlite+aiosqlite:///{db}"
    stamp = tmp_path / "schema-stamp.json"

    upgrade(url, stamp)  # no stamp yet: Alembic runs and records what it left
    recorded = json.loads(stamp.read_text())
    with sqlite3.connect(db) as conn:
        at = sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))
    assert recorded["revisions"] == at and len(recorded["migrations"]) == 64

    # A matching stamp: Alembic is not run, so the stamp is left as it is (marker kept).
    stamp.write_text(json.dumps({**recorded, "marker": 1}))
    upgrade(url, stamp)
    assert json.loads(stamp.read_text()).get("marker") == 1

    # The store holds other revisions than the stamp says: Alembic runs and rewrites it.
    stamp.write_text(json.dumps({**recorded, "revisions": at[:-1], "marker": 1}))
    upgrade(url, stamp)
    assert json.loads(stamp.read_text()) == recorded

    # Other migration files than the stamp's: Alembic runs.
    stamp.write_text(json.dumps({**recorded, "migrations": "0" * 64, "marker": 1}))
    upgrade(url, stamp)
    assert json.loads(stamp.read_text()) == recorded
