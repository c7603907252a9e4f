"""What defines a SqueezeNet variant, without torch: the configuration dataclass, the two
architectures' defaults and the bypass modes. Checkpoints and artifacts carry a
:class:`SqueezeNetConfig`; :mod:`.models` builds the network from it.

Fire module i (i = 0 for fire2 ... 7 for fire9) has ``e_i = base_e + incr_e * floor(i / freq)``
expand filters, ``pct_3x3`` of them 3x3, and ``squeeze_ratio * e_i`` squeeze filters. The defaults
reproduce SqueezeNet 1.0 exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Tuple

from .errors import EdgeSqueezeError

BYPASS_MODES = ("none", "simple", "complex")


@dataclasses.dataclass(frozen=True)
class SqueezeNetConfig:
    """Everything that defines a SqueezeNet variant; serialised into checkpoints and artifacts."""

    version: str = "1_0"
    num_classes: int = 1000
    bypass: str = "none"
    base_e: int = 128
    incr_e: int = 128
    pct_3x3: float = 0.5
    freq: int = 2
    squeeze_ratio: float = 0.125
    conv1_channels: int = 96
    conv1_kernel: int = 7
    # max-pool after conv1 and after these fire modules (2..9); the paper's "late downsampling"
    pool_after: Tuple[int, ...] = (4, 8)
    conv10_padding: int = 0  # 1 in the Caffe Deep-Compression model
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.bypass not in BYPASS_MODES:
            raise EdgeSqueezeError(f"bypass must be one of {', '.join(BYPASS_MODES)}, not {self.bypass!r}")
        if not 0.0 < self.pct_3x3 < 1.0:
            raise EdgeSqueezeError("pct_3x3 must lie strictly between 0 and 1")
        if self.num_classes < 1:
            raise EdgeSqueezeError("num_classes must be at least 1")

    def fire_widths(self) -> List[Tuple[int, int, int]]:
        """(squeeze, expand1x1, expand3x3) for fire2 ... fire9."""
        widths = []
        for i in range(8):
            e = self.base_e + self.incr_e * (i // self.freq)
            e3 = round(e * self.pct_3x3)
            widths.append((max(1, round(e * self.squeeze_ratio)), e - e3, e3))
        return widths

    @property
    def arch(self) -> str:
        return f"squeezenet{self.version}"

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["pool_after"] = list(self.pool_after)
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> SqueezeNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "pool_after" in kwargs:
            kwargs["pool_after"] = tuple(kwargs["pool_after"])
        return cls(**kwargs)


ARCH_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "squeezenet1_0": {"version": "1_0", "conv1_channels": 96, "conv1_kernel": 7, "pool_after": (4, 8)},
    # 1.1: 64 3x3 filters in conv1 and earlier pooling, 2.4x less compute, same accuracy
    "squeezenet1_1": {"version": "1_1", "conv1_channels": 64, "conv1_kernel": 3, "pool_after": (3, 5)},
}


def config_for(arch: str, **overrides: Any) -> SqueezeNetConfig:
    if arch not in ARCH_DEFAULTS:
        raise EdgeSqueezeError(f"unknown architecture {arch!r}: choose {' or '.join(ARCH_DEFAULTS)}")
    values = dict(ARCH_DEFAULTS[arch])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SqueezeNetConfig(**values)


ARCHS = tuple(ARCH_DEFAULTS)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe: the solver, its learning rate for a reference global batch, the schedule."""

    name: str
    optimizer: str  # "adam" | "sgd"
    lr: float
    reference_batch: int  # the global batch ``lr`` is for
    scale_lr: bool  # scale lr linearly with the global batch (Goyal et al. 2017)
    epochs: int
    schedule: str  # "warmup": linear warm-up then constant; "poly": linear decay to 0 over training
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_grad: float = 0.0  # gradient norm clipping, 0 for none

    def lr_for(self, global_batch: int) -> float:
        return self.lr * global_batch / self.reference_batch if self.scale_lr else self.lr


RECIPES: Dict[str, Recipe] = {
    # the seed experiment: SqueezeNet 1.0, 20 epochs, Adam, lr 0.001 (with a short warm-up and
    # clipping, which keep the ReLU before the global pool alive on small data)
    "seed": Recipe("seed", "adam", 0.001, 32, False, 20, "warmup", clip_grad=1.0),
    # the solver published with the reference Caffe models, forresti/SqueezeNet at 0bc03d9 (2016-03-25,
    # unchanged since; SqueezeNet_v1.0/solver.prototxt, the same in SqueezeNet_v1.1/): SGD, momentum
    # 0.9, weight decay 0.0002, base_lr 0.04 for a global batch of 512 (batch_size 32 x iter_size 16),
    # "poly" with power 1 (linear decay to zero), max_iter 170,000 = 87 M images = 68 epochs of
    # ImageNet-1k's 1,281,167. Its conv10 starts from a Gaussian of std 0.01, as ours does.
    "paper": Recipe("paper", "sgd", 0.04, 512, True, 68, "poly", momentum=0.9, weight_decay=0.0002),
}
