"""Video suites (``longvideobench``, ``mlvu``): a transformers video-LLM (LLaVA-NeXT-Video) whose
language model runs with the eviction cache. See ``tasks/video/README.md``.

Importing this package registers the suites and needs no video dependency; PyAV is imported when a
video is read, lmms-eval only by the lmms-eval model :mod:`harness.lmms_eval_model`.
"""

from tasks.video import longvideobench, mlvu  # noqa: F401  (suites register on import)
