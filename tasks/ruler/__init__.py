"""RULER (NVIDIA/RULER): the ``ruler`` suite and its generators; see ``tasks/ruler/README.md``.

Importing the package registers the suite (:mod:`tasks.ruler.suite`).
"""

from tasks.ruler.suite import Ruler  # noqa: F401  (registers --suite ruler)

__all__ = ["Ruler"]
