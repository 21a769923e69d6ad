"""Decision Transformer checkpoints: the shipped small DTs, a local folder, or a hub id.

``--model`` values (``None`` = the shipped DTs):

- ``None``: ``tasks/d4rl/checkpoints/<task>/`` — small DTs trained here on GENERATED data (see
  ``checkpoints/README.md``); the suite runs out of the box with them;
- a folder with one DT per task (``DIR/<task>/config.json``) or a single DT (``DIR/config.json``,
  used for every task whose env has its state/action sizes);
- a hub id, optionally a template with ``{task}``, ``{env}``, ``{quality}``; ``edbeeching`` is short
  for ``edbeeching/decision-transformer-gym-{task}`` (the paper's checkpoints, from the HF blog).

A DT needs its state normalisation and return scale: ``dt_info.json`` next to its weights
(``state_mean``, ``state_std``, ``return_scale``, ``target_return``), or else the state statistics
of the task's dataset (:mod:`tasks.d4rl.data`) with return scale 1000 and the DT paper's target
returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.base import TaskUnavailable
from tasks.d4rl.envs import split_task
from tasks.d4rl.rollout import DTSpec

SHIPPED = Path(__file__).parent / "checkpoints"
INFO = "dt_info.json"
ALIASES = {"edbeeching": "edbeeching/decision-transformer-gym-{task}"}
#: Target returns of the DT paper (Chen et al. 2021) / HF blog for D4RL, used without dt_info.json.
TARGET_RETURNS = {"hopper": 3600.0, "walker2d": 5000.0, "halfcheetah": 6000.0}
ENV_DIMS = {"hopper": (11, 3), "walker2d": (17, 6), "halfcheetah": (17, 6)}


@dataclass
class LoadedDT:
    model: object
    spec: DTSpec
    location: str
    info: dict  # dt_info.json (training info and dataset provenance) or what we derived


def _dtype(dtype):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype or torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[str(dtype)]


class DTModels:
    """The run's DTs, loaded per task on first use (the paper has one checkpoint per task)."""

    def __init__(
        self,
        model: str | None = None,
        device="cpu",
        dtype="float32",
        dataset_source: str = "auto",
        download: bool = False,
    ):
        self.location = ALIASES.get(model, model) if model else None
        self.device, self.dtype = device, _dtype(dtype)
        self.dataset_source, self.download = dataset_source, download
        self._loaded: dict[str, LoadedDT] = {}
        self.attn_implementation = None

    @property
    def name(self) -> str:
        if self.location is None:
            return "shipped-dt"
        return Path(self.location).name if Path(self.location).exists() else self.location.replace("/", "--")

    def set_attn_implementation(self, name: str) -> None:
        """So that :func:`harness.attention.attach` may be called on this object too."""
        self.attn_implementation = name
        for loaded in self._loaded.values():
            loaded.model.set_attn_implementation(name)

    def resolve(self, task: str) -> str:
        env, quality = split_task(task)
        if self.location is None:
            folder = SHIPPED / task
            if not (folder / "config.json").exists():
                raise TaskUnavailable(
                    f"no shipped DT for {task} in {SHIPPED}; train one with "
                    f"`python -m harness fit-dt --task {task}` and pass --model DIR"
                )
            return str(folder)
        loc = self.location.format(task=task, env=env, quality=quality) if "{" in self.location else self.location
        path = Path(loc)
        if path.is_dir():
            if (path / task / "config.json").exists():
                return str(path / task)
            if (path / "config.json").exists():
                return str(path)
            raise TaskUnavailable(f"{path} holds neither {task}/config.json nor config.json (a transformers DT folder)")
        if path.exists() or loc.startswith((".", "/", "~")):
            raise TaskUnavailable(f"DT model folder {loc} not found")
        return loc  # hub id

    def get(self, task: str) -> LoadedDT:
        if task in self._loaded:
            return self._loaded[task]
        from transformers import DecisionTransformerModel

        env, quality = split_task(task)
        loc = self.resolve(task)
        try:
            model = DecisionTransformerModel.from_pretrained(loc, dtype=self.dtype)
        except OSError as err:
            raise TaskUnavailable(
                f"cannot load DT {loc!r} for {task} (offline, or not a DecisionTransformerModel): "
                f"{str(err).splitlines()[0]}"
            ) from err
        model = model.to(self.device).eval()
        dims = ENV_DIMS[env]
        if (model.config.state_dim, model.config.act_dim) != dims:
            raise TaskUnavailable(
                f"DT {loc} has state/action sizes {(model.config.state_dim, model.config.act_dim)}, "
                f"but {env} needs {dims}"
            )
        if self.attn_implementation:
            model.set_attn_implementation(self.attn_implementation)
        info = self._info(loc)
        if info:
            spec = DTSpec(
                np.asarray(info["state_mean"], dtype=np.float64),
                np.asarray(info["state_std"], dtype=np.float64),
                float(info.get("return_scale", 1000.0)),
                float(info.get("target_return", TARGET_RETURNS[env])),
            )
        else:
            from tasks.d4rl.data import find_dataset, state_stats, trajectories

            dataset, dataset_id, source = find_dataset(env, quality, self.download, self.dataset_source)
            mean, std = state_stats(trajectories(dataset))
            spec = DTSpec(mean, std, 1000.0, TARGET_RETURNS[env])
            info = {
                "spec_from": dataset_id,
                "dataset_source": source,
                "dataset_id": dataset_id,
                "generated": source == "generated",
                "return_scale": 1000.0,
                "target_return": TARGET_RETURNS[env],
            }
        self._loaded[task] = LoadedDT(model, spec, loc, info)
        return self._loaded[task]

    @staticmethod
    def _info(loc: str) -> dict | None:
        path = Path(loc) / INFO
        if path.exists():
            return json.loads(path.read_text())
        if Path(loc).exists():
            return None
        try:
            from huggingface_hub import hf_hub_download

            return json.loads(Path(hf_hub_download(loc, INFO)).read_text())
        except Exception:  # noqa: BLE001  (no dt_info.json on the hub, or offline)
            return None
