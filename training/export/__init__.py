"""Exports of a published version, for serving it outside this project: ONNX, torch.export
and a Triton model repository, written beside the version (``python -m training export``).

    registry/<model>/exports/<version>/
        export.json                           manifest: source, input contract, files + sha256
        model.onnx                            ONNX graph, dynamic batch (training.export.onnx)
        model.pt2                             torch.export ExportedProgram (training.export.program)
        triton/<model>/config.pbtxt           Triton repository (training.export.triton)
        triton/<model>/labels.txt
        triton/<model>/<version>/model.onnx

Beside the version, never inside it: a published version is immutable and its files are
hash-checked at every load, so exporting must not touch them. What is exported is the model
:func:`artifacts.registry.load_artifact` returns (verified, and wrapped in the version's
test-time augmentation), in fp32 on the CPU, and every format must reproduce its probabilities
before it is written (:mod:`training.export.exporter`).

This module imports nothing heavy, so the command line can name the formats without torch.
"""

FORMATS = ("onnx", "torch-export", "triton")
DEFAULT_OPSET = 18  # the dynamo exporter's default; ONNX Runtime runs opset 18 since 1.14
DEFAULT_MAX_BATCH_SIZE = 64  # Triton's max_batch_size: the service's MAX_BATCH_SIZE default
