"""lmms-eval entry point (group ``lmms_eval.models``): the ``namm_video`` model manifest.

Declared in ``pyproject.toml`` as::

    [project.entry-points."lmms_eval.models"]
    namm_video = "harness.lmms_eval_plugin:manifests"

lmms-eval calls :func:`manifests` while building its model registry; the model module
(:mod:`harness.lmms_eval_model`) is imported only when ``--model namm_video`` is used.
"""

MODEL_ID = "namm_video"
CLASS_PATH = "harness.lmms_eval_model.NAMMVideo"


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)]
