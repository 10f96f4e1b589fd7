"""Would another backend serve faster? Eager PyTorch (as the service runs it) against ONNX Runtime
and ``torch.compile`` on the same fp32 model, forward passes only, same process, same threads.

The issue's bar for a ``BACKEND`` setting: at least 20% more images/s for ResNet-18 at
concurrency 64 through the service, probabilities within 1e-4. A forward is most of the
service's cost per image for ResNet-18, so a backend that does not beat eager by that much on
the forward alone cannot beat it through the service; this measures the forward, interleaved
(each round runs every contender once, in an order that turns each round) so that a busy host
hits all alike, and reports medians and the ratio to eager fp32 measured in the same run.

    python bench/export_backends.py [--model resnet18] [--batches 1 16 64] [--rounds 5] [--threads 1]

The weights are random (speed does not depend on them; parity is checked on them too). The
service's own default on CPUs with bf16 units (AMX / AVX512-BF16) is eager bf16, shown as a row
of its own: the fp32 backends are compared with eager fp32, as the issue asks, and with it.
"""

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from artifacts.devices import cpu_has_bf16  # noqa: E402

Forward = Callable[[torch.Tensor], torch.Tensor]  # normalised NCHW float32 -> probabilities


def eager(model: torch.nn.Module, dtype: torch.dtype) -> Forward:
    """The service's path: channels_last, inference mode, the serving dtype."""
    model = model.to(dtype=dtype, memory_format=torch.channels_last)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            inputs = batch.to(dtype, memory_format=torch.channels_last)
            return model(inputs).float().softmax(dim=1)

    return forward


def onnx_runtime(model: torch.nn.Module, example: torch.Tensor, workdir: Path, threads: int) -> Forward:
    """The model as ``python -m training export --format onnx`` writes it, run by ONNX Runtime."""
    import onnxruntime

    from training.export.onnx import INPUT_NAME, OUTPUT_NAME, export_onnx

    path = workdir / "model.onnx"
    export_onnx(model, example, path, opset=18, metadata={})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(batch: torch.Tensor) -> torch.Tensor:
        logits = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
        return torch.from_numpy(logits).softmax(dim=1)

    return forward


def compiled(model: torch.nn.Module, batches: list[int], shape: tuple[int, ...]) -> Forward:
    """``torch.compile`` (inductor, fp32), compiled for every batch size before timing."""
    model = torch.compile(model.to(memory_format=torch.channels_last), dynamic=False)
    forward = eager(model, torch.float32)
    for size in batches:
        forward(torch.randn(size, *shape))
    return forward


def images_per_second(forward: Forward, batch: torch.Tensor, seconds: float) -> float:
    forward(batch)  # warm the allocator and any per-shape caches
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        forward(batch)
        count += len(batch)
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per contender per batch size per round")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the service: TORCH_THREADS=1)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles for minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (1, 28, 28)
    model = models.build_model(args.model, num_classes=10, in_channels=1, image_size=shape[1:]).eval()
    example = torch.randn(2, *shape)

    with tempfile.TemporaryDirectory() as tmp:
        contenders: dict[str, Forward] = {"eager fp32": eager(copy.deepcopy(model), torch.float32)}
        if cpu_has_bf16():
            contenders["eager bf16 (the service's default here)"] = eager(copy.deepcopy(model), torch.bfloat16)
        contenders["onnxruntime fp32"] = onnx_runtime(copy.deepcopy(model), example, Path(tmp), args.threads)
        if not args.no_compile:
            started = time.perf_counter()
            contenders["torch.compile fp32"] = compiled(copy.deepcopy(model), args.batches, shape)
            print(f"torch.compile: compiled in {time.perf_counter() - started:.0f} s")

        probe = torch.randn(64, *shape)
        reference = contenders["eager fp32"](probe)
        parity = {name: float((forward(probe) - reference).abs().max()) for name, forward in contenders.items()}

        results = {(name, size): [] for name in contenders for size in args.batches}
        names = list(contenders)
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for size in args.batches:
                batch = torch.randn(size, *shape)
                for name in order:
                    results[name, size].append(images_per_second(contenders[name], batch, args.seconds))

    print(f"{args.model} 1x28x28, {args.threads} thread(s), {args.rounds} interleaved rounds (median images/s; "
          f"ratio to eager fp32 in the same run); max |dp| vs eager fp32 on 64 random images")
    header = "".join(f"{'batch ' + str(size):>18}" for size in args.batches)
    print(f"{'backend':42}{header}{'max |dp|':>12}")
    for name in names:
        cells = ""
        for size in args.batches:
            median = statistics.median(results[name, size])
            base = statistics.median(results["eager fp32", size])
            cells += f"{median:10.0f} ({median / base:4.2f}x)"
        print(f"{name:42}{cells}{parity[name]:12.1e}")


if __name__ == "__main__":
    main()
