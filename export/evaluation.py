"""How an export's files score on a labelled folder (``export --eval``): PyTorch, the fp32 ONNX and
both INT8 files, each exactly as written, with their top-1 agreement."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

from edge_squeeze.formats import FP32, INT8_CPU, INT8_QDQ
from edge_squeeze.preprocess import PreprocessSpec
from edge_squeeze.results import top1_agreement

log = logging.getLogger("edge_squeeze")


def evaluate_exported(out: Path, data: Path, bundle: Any, int8: bool) -> Dict[str, Any]:
    """Accuracy of PyTorch, the fp32 ONNX and (with int8) both INT8 files, and their agreement."""
    import torch

    from edge_squeeze.evaluate import accuracy_from_logits, ground_truth, infer_batched, load_eval_set
    from edge_squeeze.runtimes import onnxruntime_backend as ortb

    paths, all_truth = ground_truth(data, bundle.labels)
    eval_sets: Dict[PreprocessSpec, Any] = {}
    results: Dict[str, Any] = {"data": str(data)}

    def run(infer: Any, spec: PreprocessSpec) -> Any:
        if spec not in eval_sets:  # the CPU int8 model may take uint8 pixels
            eval_sets[spec] = load_eval_set(paths, all_truth, spec)
        inputs, truth = eval_sets[spec]
        return accuracy_from_logits(infer_batched(infer, inputs, 50), truth)

    with torch.no_grad():
        acc = run(lambda x: bundle.model(torch.from_numpy(x)).numpy(), bundle.preprocess)
    results["pytorch"] = acc.to_dict()
    reference = acc.predictions
    files = [("onnx_fp32", FP32)]
    if int8:
        files += [("onnx_int8", INT8_QDQ), ("onnx_int8_cpu", INT8_CPU)]
    fp32_predictions = None
    for key, name in files:
        backend = ortb.load(out / name, ortb.OrtOptions())  # exactly this file
        acc = run(backend.infer, backend.metadata.preprocess)
        row = acc.to_dict()
        row["agreement_with_pytorch"] = top1_agreement(acc.predictions, reference)
        if key == "onnx_fp32":
            fp32_predictions = acc.predictions
        else:
            row["agreement_with_fp32"] = top1_agreement(acc.predictions, fp32_predictions)
        results[key] = row
        log.info(
            "%s on %s: top-1 %.1f%%, top-5 %.1f%% (%d images)",
            name,
            data,
            100 * acc.top1,
            100 * acc.top5,
            acc.n,
        )
    return results
