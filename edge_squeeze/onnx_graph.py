"""SqueezeNet as an fp32 ONNX graph, built from its config and a numpy state dict without torch.

This is how a compressed model (``.esqz``, or the paper's ``.net``) runs on the deploy side: its
weights are decompressed with numpy and ONNX Runtime runs this graph, on a Jetson or any CPU box
that has no PyTorch. The graph is the one :class:`edge_squeeze.models.SqueezeNet` computes (checked
against it in ``tests/test_compression.py``): the same initializer names as its state dict.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .config import SqueezeNetConfig
from .errors import EdgeSqueezeError, require

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def squeezenet_graph(config: SqueezeNetConfig, state: Dict[str, np.ndarray]) -> Any:
    """An ``onnx.ModelProto`` (dynamic batch and image size) of ``config`` with ``state``'s weights."""
    onnx = require("onnx", "running compressed models without torch")
    # submodules imported by name: onnx 1.13 does not import numpy_helper with the package
    helper = require("onnx.helper", "running compressed models without torch")
    numpy_helper = require("onnx.numpy_helper", "running compressed models without torch")
    checker = require("onnx.checker", "running compressed models without torch")
    nodes: List[Any] = []
    used: List[str] = []

    def conv(name: str, x: str, padding: int = 0, stride: int = 1) -> str:
        weight = f"{name}.weight"
        if weight not in state:
            raise EdgeSqueezeError(f"the weights lack {weight}: they are not this SqueezeNet's")
        kernel = list(state[weight].shape[2:])
        inputs = [x, weight] + ([f"{name}.bias"] if f"{name}.bias" in state else [])
        used.extend(inputs[1:])
        nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [name],
                name=name,
                kernel_shape=kernel,
                pads=[padding] * 4,
                strides=[stride] * 2,
            )
        )
        return name

    def relu(x: str) -> str:
        nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"]))
        return f"{x}.relu"

    def pool(x: str, name: str) -> str:
        nodes.append(
            helper.make_node(
                "MaxPool", [x], [name], name=name, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1
            )
        )
        return name

    x = pool(relu(conv("features.0", INPUT_NAME, stride=2)), "features.2")
    index = 3
    channels = config.conv1_channels
    for number, (_, e1, e3) in enumerate(config.fire_widths(), start=2):
        prefix = f"features.{index}"
        s = relu(conv(f"{prefix}.squeeze", x))
        expands = [relu(conv(f"{prefix}.expand1x1", s)), relu(conv(f"{prefix}.expand3x3", s, padding=1))]
        nodes.append(helper.make_node("Concat", expands, [f"{prefix}.concat"], axis=1))
        out = f"{prefix}.concat"
        if config.bypass != "none" and channels == e1 + e3:
            nodes.append(helper.make_node("Add", [out, x], [f"{prefix}.bypass"]))
            out = f"{prefix}.bypass"
        elif config.bypass == "complex":
            shortcut = conv(f"{prefix}.bypass_conv", x)
            nodes.append(helper.make_node("Add", [out, shortcut], [f"{prefix}.bypass"]))
            out = f"{prefix}.bypass"
        x, channels, index = out, e1 + e3, index + 1
        if number in config.pool_after:
            x = pool(x, f"features.{index}")
            index += 1
    x = relu(conv("classifier.1", x, padding=config.conv10_padding))
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], [OUTPUT_NAME], axis=1))
    initializers = [numpy_helper.from_array(np.asarray(state[n], np.float32), n) for n in used]
    graph = helper.make_graph(
        nodes,
        "squeezenet",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["batch", config.num_classes])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-squeeze"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    checker.check_model(model)
    return model
