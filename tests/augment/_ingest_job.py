"""``odyssey rag ingest`` in a subprocess that a test kills with SIGKILL (tests/augment/test_ingest_resume.py).

usage: python _ingest_job.py PROJECT_DIR --hang-at added
Ingests PROJECT_DIR/docs into the default collection through the stage's entry function, and stops, alive,
where a crash hurts most: the new chunks are in the table, the BM25 index and the manifest are not yet
written. It prints READY there and waits to be killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main():
    from odyssey.augment.api import ingest
    from odyssey.augment.index import Collection
    from odyssey.project import Project

    root = Path(sys.argv[1])
    if "--hang-at" in sys.argv and sys.argv[sys.argv.index("--hang-at") + 1] == "added":

        def hang(self):
            print("READY", self.count(), flush=True)  # the test kills this process with SIGKILL now
            time.sleep(600)

        Collection._rebuild_bm25 = hang
    ingest(Project.load(root), ["docs"])


if __name__ == "__main__":
    main()
