"""The SqueezeNet family (Iandola et al., ICLR 2017), built from the paper's metaparameters
(:class:`~edge_squeeze.config.SqueezeNetConfig`).

State-dict keys match torchvision's ``squeezenet1_0``/``squeezenet1_1`` (``features.3.squeeze.weight``,
``classifier.1.weight``, ...), so torchvision's ImageNet checkpoints load unchanged. This module
needs torch (the workstation side).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Union

from .config import ARCH_DEFAULTS, BYPASS_MODES, SqueezeNetConfig, config_for
from .errors import EdgeSqueezeError, require
from .labels import Labels, imagenet_labels
from .preprocess import PreprocessSpec
from .weights import LoadedWeights, infer_num_classes, read_weights

torch = require("torch", "the SqueezeNet models")
nn = torch.nn


class Fire(nn.Module):
    """1x1 squeeze, then parallel 1x1 and 3x3 expands, concatenated; optional bypass around it."""

    def __init__(
        self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int, bypass: str = "none"
    ) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        out = expand1x1 + expand3x3
        self.identity_bypass = bypass != "none" and inplanes == out
        # complex bypass: a 1x1 conv where the widths differ (the paper's extra parameters)
        self.bypass_conv = (
            nn.Conv2d(inplanes, out, kernel_size=1) if bypass == "complex" and inplanes != out else None
        )

    @property
    def has_bypass(self) -> bool:
        return self.identity_bypass or self.bypass_conv is not None

    def forward(self, x: Any) -> Any:
        s = self.squeeze_activation(self.squeeze(x))
        out = torch.cat(
            [self.expand1x1_activation(self.expand1x1(s)), self.expand3x3_activation(self.expand3x3(s))], 1
        )
        if self.identity_bypass:
            out = out + x
        elif self.bypass_conv is not None:
            out = out + self.bypass_conv(x)
        return out


class SqueezeNet(nn.Module):
    def __init__(self, config: Optional[SqueezeNetConfig] = None) -> None:
        super().__init__()
        self.config = config = config or SqueezeNetConfig()
        layers: List[Any] = [
            nn.Conv2d(3, config.conv1_channels, kernel_size=config.conv1_kernel, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        ]
        channels = config.conv1_channels
        for number, (s, e1, e3) in enumerate(config.fire_widths(), start=2):
            layers.append(Fire(channels, s, e1, e3, config.bypass))
            channels = e1 + e3
            if number in config.pool_after:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        final_conv = nn.Conv2d(channels, config.num_classes, kernel_size=1, padding=config.conv10_padding)
        self.classifier = nn.Sequential(
            nn.Dropout(p=config.dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    # small init keeps the ReLU before the global pool alive; with the default init
                    # training from scratch can stall at chance
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        for m in self.modules():
            if isinstance(m, Fire) and m.has_bypass:
                # A bypassed Fire starts as its shortcut alone (the residual branch at zero, as in
                # Goyal et al. 2017 and Fixup). With plain init each sum doubles the variance: the
                # complex-bypass 1.0 reached logits of std 13 at init and both bypass variants sat at
                # chance; zeroed, simple bypass trained (benchmarks/bypass_experiment.py).
                nn.init.zeros_(m.expand1x1.weight)
                nn.init.zeros_(m.expand3x3.weight)
                if m.bypass_conv is not None:  # linear, no ReLU after it: unit gain keeps the variance
                    nn.init.kaiming_uniform_(m.bypass_conv.weight, nonlinearity="linear")

    def forward(self, x: Any) -> Any:
        return torch.flatten(self.classifier(self.features(x)), 1)


def _build(arch: str, num_classes: int, bypass: str, weights: Any, **meta: Any) -> SqueezeNet:
    model = SqueezeNet(config_for(arch, num_classes=num_classes, bypass=bypass, **meta))
    if weights is not None:
        load_weights_into(model, weights)
    return model


def squeezenet1_0(
    num_classes: int = 1000, bypass: str = "none", weights: Any = None, **meta: Any
) -> SqueezeNet:
    """SqueezeNet 1.0 (the paper's Table 1). ``weights``: ``"imagenet"``, a ``.pth`` state dict or a checkpoint.

    ``meta`` overrides metaparameters: base_e, incr_e, pct_3x3, freq, squeeze_ratio.
    """
    return _build("squeezenet1_0", num_classes, bypass, weights, **meta)


def squeezenet1_1(
    num_classes: int = 1000, bypass: str = "none", weights: Any = None, **meta: Any
) -> SqueezeNet:
    """SqueezeNet 1.1: same accuracy as 1.0 with 2.4x less computation."""
    return _build("squeezenet1_1", num_classes, bypass, weights, **meta)


@dataclasses.dataclass(frozen=True)
class ModelCost:
    params: int
    conv_macs: int  # multiply-accumulates of the convolutions
    bias_adds: int  # one add per conv output element (torchinfo counts these into its mult-adds)
    fp32_bytes: int

    @property
    def macs_with_bias(self) -> int:
        return self.conv_macs + self.bias_adds


def model_cost(model: Any, image_size: int = 224) -> ModelCost:
    """Parameters and multiply-adds of one image at ``image_size`` (conv layers; pools and ReLUs are free)."""
    conv_macs = 0
    bias_adds = 0

    def hook(module: Any, _inputs: Any, output: Any) -> None:
        nonlocal conv_macs, bias_adds
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        conv_macs += output.numel() * per_output
        if module.bias is not None:
            bias_adds += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return ModelCost(params=params, conv_macs=conv_macs, bias_adds=bias_adds, fp32_bytes=params * 4)


def family_table(image_size: int = 224, num_classes: int = 1000) -> List[Dict[str, Any]]:
    """One row per variant of the family: the architectures and the paper's bypass variants."""
    rows = []
    for arch in ARCH_DEFAULTS:
        for bypass in BYPASS_MODES:
            config = config_for(arch, num_classes=num_classes, bypass=bypass)
            cost = model_cost(SqueezeNet(config), image_size)
            rows.append(
                {
                    "arch": arch,
                    "bypass": bypass,
                    "params": cost.params,
                    "macs": cost.conv_macs,
                    "fp32_mb": cost.fp32_bytes / 1e6,
                }
            )
    return rows


# --- a model built from weights (weights.py only reads and fetches their bytes) -----------------


def load_weights_into(model: Any, weights: Union[str, os.PathLike[str], LoadedWeights]) -> LoadedWeights:
    """Load weights into ``model`` strictly, with one clear line on any shape or key mismatch."""
    loaded = weights if isinstance(weights, LoadedWeights) else read_weights(weights, model.config.arch)
    try:
        model.load_state_dict(loaded.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise EdgeSqueezeError(
            f"weights {loaded.source} do not fit {model.config.arch} with {model.config.num_classes} classes "
            f"(bypass={model.config.bypass}): {detail[:300]}; check --arch, --num-classes and --bypass"
        ) from exc
    return loaded


@dataclasses.dataclass
class ModelBundle:
    """A model ready to export or evaluate, with what must travel with it."""

    model: Any
    config: Any
    labels: Labels
    preprocess: PreprocessSpec
    weights_sha256: str
    source: str


def load_model(
    weights: Union[str, os.PathLike[str]],
    arch: Optional[str] = None,
    num_classes: Optional[int] = None,
    labels: Optional[Labels] = None,
    image_size: Optional[int] = None,
    bypass: Optional[str] = None,
) -> ModelBundle:
    """Build the model a weights file describes (its checkpoint config, else ``arch``) and load it."""
    loaded = read_weights(weights, arch)
    if loaded.config is not None:
        config = SqueezeNetConfig.from_dict(loaded.config)
        if arch and arch != config.arch:
            raise EdgeSqueezeError(
                f"checkpoint {loaded.source} holds {config.arch}, but --arch {arch} was given"
            )
    else:
        if arch is None:
            raise EdgeSqueezeError(
                f"{loaded.source} is a plain state dict: say which model it is with --arch"
            )
        classes = num_classes or infer_num_classes(loaded.state_dict) or 1000
        config = config_for(arch, num_classes=classes, bypass=bypass)
    if num_classes is not None and num_classes != config.num_classes:
        raise EdgeSqueezeError(
            f"--num-classes {num_classes} but the weights {loaded.source} have {config.num_classes} classes"
        )
    model = SqueezeNet(config)
    load_weights_into(model, loaded)
    model.eval()
    chosen_labels = labels or loaded.labels
    if chosen_labels is None and config.num_classes == 1000:
        chosen_labels = imagenet_labels()
    if chosen_labels is None:
        chosen_labels = Labels.numbered(config.num_classes)
    if len(chosen_labels) != config.num_classes:
        raise EdgeSqueezeError(
            f"the labels name {len(chosen_labels)} classes but the model has {config.num_classes}; "
            "pass a --labels file with one line per class"
        )
    spec = loaded.preprocess or PreprocessSpec.imagenet(image_size or 224)
    if image_size and image_size != spec.crop:
        spec = dataclasses.replace(spec, crop=image_size, resize=round(image_size * spec.resize / spec.crop))
    return ModelBundle(model, config, chosen_labels, spec, loaded.sha256, loaded.source)
