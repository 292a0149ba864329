"""A caption cache keyed by GT content hash, so re-runs of the `vlm` backend only caption new images.

Layout: `<cache_dir>/<fingerprint>/<hash[:2]>/<hash>.json`, one `Captions` JSON per GT image.
The fingerprint hashes what decides the captions (model files, prompts, generation settings), so
a different model or prompt never reads stale entries. Entries are written atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from realsr_r1.annotate.captions import Captions
from realsr_r1.atomic import write_json

log = logging.getLogger(__name__)


class CaptionCache:
    """Captions stored per pixel hash (`data.images.pixel_hash`) under one fingerprint directory."""

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint

    def _path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.json"

    def get(self, digest: str) -> Captions | None:
        """The cached captions, or None (a corrupt entry is logged and treated as missing)."""
        path = self._path(digest)
        if not path.is_file():
            return None
        try:
            return Captions.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            log.warning("ignoring corrupt cache entry %s: %s", path, err)
            return None

    def put(self, digest: str, captions: Captions) -> None:
        write_json(self._path(digest), captions.to_json())
