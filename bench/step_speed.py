"""How fast is one optimisation step, against the hardware floor and the reference loop?

    uv run python bench/step_speed.py                 # CPU: ViT-B/32 and ViT-L/14 shapes
    uv run python bench/step_speed.py --device cuda   # on a GPU
    uv run python bench/step_speed.py --routes        # CPU: each route's share of peak, per dtype

To see what a CPU with less than this one's AVX-512 (a laptop's AVX2, say) would choose, cap the
kernels' instruction sets on this machine and time float32 alone: it is the auto dtype there.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        uv run python bench/step_speed.py --routes --dtypes float32

Random-weight CLIPs of the real shapes are built locally (no download). For each shape, at 224 px
with 8 copies: the engine's step time in float32, in its default mode (auto) and compiled; the
floor (encoder forward + input-gradient FLOPs / the measured matmul peak of that dtype); and the
reference app's loop (bench/reference_loop.py). Then step time and peak memory against copies
and resolution. Every ratio comes from this one run; the table is printed last.

On the CPU the share of peak pairs each step with a matmul timing taken right after it, because
this shared VM's speed drifts by 20-30% over seconds: a peak taken once at the start, against
steps taken minutes later, measured the drift as much as the step (see note/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from das_ag import GenerationConfig, Prompt, load_models, synthesize  # noqa: E402
from das_ag.cpu_routes import EncoderShape, chosen_route, cpu_flags, cpu_model, instruction_sets  # noqa: E402
from das_ag.encoder import FrozenLinear, packing_available  # noqa: E402
from das_ag.engine import resolve_dtype  # noqa: E402
from das_ag.models import AestheticHead  # noqa: E402
from das_ag.prompts import tokenize  # noqa: E402
from das_ag.random_clip import save_random_clip  # noqa: E402
from reference_loop import ReferenceLoop  # noqa: E402

PROMPTS = (Prompt("a lighthouse on a cliff at dawn, golden light"), Prompt("blurry, dull", -1.0))
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class MatmulPeak:
    """This machine's attainable FLOP/s in `dtype`: the faster of the ways it multiplies two large
    square matrices, each timed a few times. On the CPU that includes oneDNN on a prepacked
    operand, which the engine's linears use: here it beat aten's mm by ~12% in bf16 and ~2.3x in
    float32 (aten's float32 mm goes through MKL), so a peak from aten's mm alone would overstate
    every fraction of peak. `rate()` times the chosen way again, for the CPU's paired shares.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device, trials: int = 3):
        n = 8192 if device.type == "cuda" else 2048
        self.device, self.flops = device, 2 * n**3
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        ways = {"aten mm": lambda: a @ b}
        if device.type == "cpu" and packing_available(dtype):
            # The engine's own route: a @ b as a linear whose weight b^T is packed (zero bias).
            linear = FrozenLinear(b.t(), torch.zeros(n, dtype=dtype))
            linear.pack(dtype)
            ways["oneDNN packed"] = lambda: linear(a)
        seconds = 0.1 if device.type == "cpu" else 0.2
        self.rates = {name: max(self._time(way, seconds) for _ in range(trials)) for name, way in ways.items()}
        self.way = max(self.rates, key=self.rates.get)
        self.peak, self._matmul = self.rates[self.way], ways[self.way]
        self.best = self.peak  # the highest rate seen in the run, paired timings included

    def rate(self, seconds: float) -> float:
        rate = self._time(self._matmul, seconds)
        self.best = max(self.best, rate)
        return rate

    def _time(self, matmul, seconds: float) -> float:
        matmul()
        sync(self.device)
        reps, start = 0, time.perf_counter()
        while True:
            matmul()
            reps += 1
            sync(self.device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return self.flops * reps / elapsed

    def describe(self) -> str:
        others = ", ".join(f"{name} {rate / 1e12:.3f}" for name, rate in self.rates.items() if name != self.way)
        return f"{self.peak / 1e12:.3f} TFLOP/s ({self.way}{'; ' + others if others else ''})"


def random_models(folder: Path, shape: str, device):
    """das-ag's models with random weights of a CLIP shape and a random aesthetic head, built in
    `folder` (no download): what the benches time, since only the shapes cost time."""
    clip_path = save_random_clip(Path(folder) / f"{shape.replace('/', '-')}.pt", shape, seed=0)
    head_path = Path(folder) / "head.pth"
    torch.save(AestheticHead().state_dict(), head_path)
    return load_models(str(clip_path), str(head_path), str(device))


def encoder_flops(models, copies: int) -> float:
    """FLOPs of one encoder forward and input gradient for `copies` images, counted on the plain
    float32 encoder: flop_counter knows aten's ops only, and would not see the products that the
    CPU encoder runs through oneDNN on packed weights (the same products, so the same count)."""
    x = torch.randn(copies, 3, 224, 224, device=models.device, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        models.clip.visual(x).sum().backward()
    return counter.get_total_flops()


def reset_peak_memory(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident size


def peak_memory_gib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def engine_steps(models, steps: int, beside=None, **settings) -> tuple[list[float], list]:
    """Seconds of `steps` steps after one warm-up step (two for compiled runs), and what
    `beside()` returned right before each of them (it runs between steps, off the clock).

    The engine reports step t once it has launched step t+1 (its loop runs one step ahead), so
    the time from resuming after one report to the next report is one step of device time, and
    on a GPU the host's work still overlaps the device's as in a real run.
    """
    # Eager unless a caller asks to compile: the benches built on this compare terms, canvases and
    # precisions on one step, and a GPU's default would compile it (and time the compiler).
    settings.setdefault("compile", False)
    warm = 2 if settings["compile"] else 1
    config = GenerationConfig(prompts=PROMPTS, steps=warm + 1 + steps, device=str(models.device), **settings)
    seconds, besides, resumed = [], [], None
    for event in synthesize(config, models):
        now = time.perf_counter()
        if resumed is not None:
            seconds.append(now - resumed)
        if event.step >= warm:
            if beside is not None:
                besides.append(beside())
            resumed = time.perf_counter()
    # The last report comes after the loop ends, with no step launched behind it.
    return seconds[:-1], besides[: len(seconds) - 1]


def engine_step_seconds(models, steps: int, **settings) -> float:
    """The median step: it keeps one disturbed step (this CPU is a shared VM) from moving the figure."""
    return statistics.median(engine_steps(models, steps, **settings)[0])


def reference_step_seconds(models, clip_path: Path, steps: int, copies: int) -> float:
    from das_ag.clip_package import clip_module

    # The stock CLIP, as the reference app loads it: none of das-ag's encoder changes, in float32.
    clip_model, _ = clip_module().load(str(clip_path), device=str(models.device), jit=False)
    clip_model = clip_model.float()
    tokens, _ = tokenize([p.text for p in PROMPTS[:1]])
    loop = ReferenceLoop(clip_model, models.aesthetic_head, tokens, copies=copies, device=str(models.device))
    loop.step()
    times = []
    for _ in range(steps):
        sync(models.device)
        start = time.perf_counter()
        loop.step()
        sync(models.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_routes(args: argparse.Namespace, tmp: Path, head: Path, peaks: dict) -> int:
    """Per shape and dtype: the step by the route chosen here ("auto") and by each linear route,
    each step's FLOP/s against the best matmul way's rate timed right after it."""
    rows = []
    for shape in args.shapes.split(","):
        path = save_random_clip(tmp / f"{shape.replace('/', '-')}.pt", shape, torchscript=False)
        models = load_models(str(path), str(head), "cpu")
        flops = encoder_flops(models, 8)
        for dtype in args.dtypes.split(","):
            chosen = chosen_route(EncoderShape.of(models.clip.visual), DTYPES[dtype], 8)
            for route in ("auto", "packed+blocked", "aten+blocked", "aten+sdpa"):
                times, rates = engine_steps(models, args.steps, lambda peak=peaks[dtype]: peak.rate(0.4),
                                            augment_copies=8, dtype=dtype, cpu_route=route)
                fraction = statistics.median(flops / t / r for t, r in zip(times, rates))
                label = f"auto = {chosen}" if route == "auto" else route
                rows.append((shape, dtype, label, statistics.median(times), fraction))
                print(f"  {shape} {dtype} {label}: {rows[-1][3]:.3f} s/step, {fraction:.1%} of peak", flush=True)
    print(f"\nRoutes on {cpu_model()}, {instruction_sets()} ({torch.get_num_threads()} threads, torch {torch.__version__}); 224 px, 8 copies;")
    print("'of peak': the median of each step's FLOP/s over the best matmul way's rate timed right after it")
    print(f"{'shape':10} {'dtype':9} {'route':30} {'s/step':>8} {'of peak':>8}")
    for shape, dtype, label, seconds, fraction in rows:
        print(f"{shape:10} {dtype:9} {label:30} {seconds:8.3f} {fraction:8.1%}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", default="ViT-B/32,ViT-L/14")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (the median is kept)")
    parser.add_argument("--scaling-shape", default=None, help="default: ViT-L/14 on CUDA, ViT-B/32 on the CPU")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--routes", action="store_true",
                        help="CPU: time the step by each route (cpu_routes.py) in float32 and bfloat16, against "
                             "the route chosen here; no scaling, reference or compile")
    parser.add_argument("--dtypes", default="float32,bfloat16",
                        help="--routes: the dtypes timed (bfloat16 is emulated, and slow, without avx512_bf16)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="das-ag-bench-") as scratch:  # a random ViT-L/14 is 0.8 GB
        return measure(args, Path(scratch))


def measure(args: argparse.Namespace, tmp: Path) -> int:
    device = torch.device(args.device)
    head = tmp / "head.pth"
    torch.save(AestheticHead().state_dict(), head)  # random weights: only its shape costs time

    # Only the dtypes timed: an emulated bfloat16 mm (no avx512_bf16, or capped kernels) takes minutes.
    timed = args.dtypes.split(",") if args.routes else ("float32", "bfloat16")
    peaks = {name: MatmulPeak(DTYPES[name], device) for name in timed}
    auto = resolve_dtype("auto", device)
    if device.type == "cpu":
        print(f"{cpu_model()}; flags: {' '.join(cpu_flags())}; kernels: {instruction_sets()}")
    described = ", ".join(f"{name} {peak.describe()}" for name, peak in peaks.items())
    print(f"{device} matmul peak: {described}; auto = {auto}", flush=True)
    if args.routes:
        return measure_routes(args, tmp, head, peaks)
    # Scaling first: on the CPU, memory a bigger model has held is not given back, which would
    # hide these peaks.
    scaling_shape = args.scaling_shape or ("ViT-L/14" if device.type == "cuda" else "ViT-B/32")
    path = save_random_clip(tmp / "scaling.pt", scaling_shape, torchscript=False)
    models = load_models(str(path), str(head), str(device))
    scaling = []
    for resolution in (224, 448):
        for copies in (4, 8, 16, 32):
            reset_peak_memory(device)
            seconds = engine_step_seconds(models, args.steps, augment_copies=copies, resolution=resolution)
            scaling.append((resolution, copies, seconds, peak_memory_gib(device)))
            print(f"  scaling {scaling_shape} {resolution}px x{copies}: {seconds:.3f} s/step", flush=True)

    rows = []
    for shape in args.shapes.split(","):
        path = save_random_clip(tmp / f"{shape.replace('/', '-')}.pt", shape, torchscript=False)
        models = load_models(str(path), str(head), str(device))
        flops = encoder_flops(models, 8)
        modes = [("float32", dict(dtype="float32")), (f"auto ({auto})", dict(dtype="auto"))]
        if not args.no_compile:
            modes.append((f"auto ({auto}) + compile", dict(dtype="auto", compile=True)))
        measured = {}
        for label, settings in modes:
            dtype = settings["dtype"] if settings["dtype"] != "auto" else auto
            if device.type == "cpu":  # pair each step with a peak timed right after it
                times, rates = engine_steps(models, args.steps, lambda peak=peaks[dtype]: peak.rate(0.4), augment_copies=8, **settings)
                seconds, peak = statistics.median(times), statistics.median(rates)
                fraction = statistics.median(flops / t / r for t, r in zip(times, rates))
            else:
                seconds, peak = engine_step_seconds(models, args.steps, augment_copies=8, **settings), peaks[dtype].peak
                fraction = flops / seconds / peak
            measured[label] = seconds
            rows.append((shape, label, seconds, flops / seconds, fraction, flops / peak, peak, dtype))
            print(f"  {shape} {label}: {seconds:.3f} s/step, {fraction:.1%} of peak", flush=True)
        if not args.no_reference:
            ref = reference_step_seconds(models, path, args.steps, 8)
            peak = peaks["float32"].peak
            rows.append((shape, "reference loop (float32)", ref, flops / ref, flops / ref / peak, flops / peak, peak, "float32"))
            print(f"  {shape} reference: {ref:.3f} s/step", flush=True)
            for label, seconds in measured.items():
                rows.append((shape, f"speed-up of {label}", ref / seconds, None, None, None, None, None))

    print(f"\nStep speed on {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}); 224 px, 8 copies")
    if device.type == "cpu":
        print("'peak' is the median of the matmul timings taken right after each step, 'of peak' the median of the steps' paired shares;")
    print("'of best' is the step's FLOP/s against the highest matmul rate of its dtype seen anywhere in this run")
    print(f"{'shape':10} {'mode':34} {'s/step':>9} {'TFLOP/s':>8} {'peak':>8} {'of peak':>8} {'of best':>8} {'floor s':>8}")
    for shape, label, value, rate, fraction, floor, peak, dtype in rows:
        if rate is None:
            print(f"{shape:10} {label:34} {value:8.2f}x")
        else:
            best = rate / peaks[dtype].best
            print(f"{shape:10} {label:34} {value:9.3f} {rate / 1e12:8.3f} {peak / 1e12:8.3f} {fraction:8.1%} {best:8.1%} {floor:8.3f}")
    print(f"\nScaling ({scaling_shape}, default mode): step time and peak {'GPU memory' if device.type == 'cuda' else 'resident memory'}")
    print(f"{'resolution':>10} {'copies':>6} {'s/step':>8} {'s/copy':>8} {'peak GiB':>9}")
    for resolution, copies, seconds, memory in scaling:
        print(f"{resolution:>10} {copies:>6} {seconds:8.3f} {seconds / copies:8.4f} {memory:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
