"""Which way the image encoder runs on this CPU, chosen by measuring it here, once.

The encoder's matmuls can run on weights prepacked for oneDNN or through aten's own linear, and
its attention over groups of heads (`encoder.blocked_attention`, in groups of a chosen size) or
through torch's scaled-dot-product attention. Which is fastest depends on the CPU: on a 2-core
AMD EPYC with AVX-512 bf16 the packed linears ran float32 at 2.4x aten's speed; on an Intel Ice
Lake without bf16 they were 23% slower (issue 30). So the first time an encoder shape runs on a
CPU model, in a dtype, with a thread count and a batch of rows, each route is timed for a few
seconds at most and the fastest is kept in das-ag's cache folder (`cpu-routes.json`), keyed by
all of those, the vector units and kernels that run, and the torch version; later runs read it.
`das-ag bench-cpu` measures again.

A route changes the order of floating-point sums, so the same route makes the same bits and
another route other bits: a run records the routes it took (`run.cpu_route` in its recipe), and
a re-run from the recipe takes them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path


LINEARS = ("packed", "aten")
ATTENTIONS = ("blocked", "sdpa")
CACHE_FILE = "cpu-routes.json"
CACHE_VERSION = 2  # 2: the linears chosen on whole blocks (1 timed them alone)
# Below this many FLOPs for the largest matmul of a step's forward, timings are noise, not a
# measure (a tiny CLIP's matmuls take microseconds): such shapes keep the route of releases
# before the measurement, so their bytes do not depend on a coin toss of the scheduler.
MEASURE_FROM_FLOPS = 5e8
TRIALS = 3  # timings per candidate, interleaved, the fastest kept: the shared VM's speed drifts
# Blocks timed together, each with its own weights: a step streams every block's weights from
# memory, and one block timed again and again would find its weights in the cache instead.
BLOCKS_TIMED = 4
# A candidate whose first run takes this many times the quickest first run is out of the race
# (a first run pays one-off costs too, so the margin is wide; no route within it is dropped).
OUTRUN = 5.0


@dataclass(frozen=True)
class CpuRoute:
    """How an encoder's step runs on the CPU: `linear` packed (oneDNN on prepacked weights) or
    aten; `attention` blocked (groups of `heads` heads of one image, 0 meaning sized to stay in
    cache) or sdpa (torch's scaled_dot_product_attention)."""

    linear: str = "packed"
    attention: str = "blocked"
    heads: int = 0

    def __str__(self) -> str:
        group = f"-{self.heads}" if self.attention == "blocked" and self.heads else ""
        return f"{self.linear}+{self.attention}{group}"

    @classmethod
    def parse(cls, text: str) -> CpuRoute:
        """'packed+blocked-16', 'aten+sdpa', 'packed' (the attention blocked, groups sized by cache)."""
        linear, _, attention = str(text).strip().partition("+")
        attention, _, heads = (attention or "blocked").partition("-")
        if linear not in LINEARS or attention not in ATTENTIONS or (heads and (attention != "blocked" or not heads.isdigit()
                                                                              or int(heads) < 1)):
            raise ValueError(f"{text!r} is not a CPU route: write LINEAR+ATTENTION with LINEAR packed or aten and "
                             "ATTENTION blocked, blocked-N (N heads a group) or sdpa, e.g. packed+blocked-16")
        return cls(linear, attention, int(heads) if heads else 0)


# The route of releases before routes were chosen: what a recipe without `run.cpu_route` took.
LEGACY_ROUTE = CpuRoute()


def parse_routes(text: str) -> tuple[CpuRoute, ...] | None:
    """A config's `cpu_route`: None for "auto" (measured), else one route per encoder, comma-separated
    (one route for an ensemble means that route for each of its encoders)."""
    if str(text).strip() == "auto":
        return None
    return tuple(CpuRoute.parse(part) for part in str(text).split(","))


def describe_routes(routes: tuple[CpuRoute, ...]) -> str:
    """What a recipe records: one route (for every encoder), or one per encoder of an ensemble."""
    return str(routes[0]) if len(set(routes)) == 1 else ",".join(str(r) for r in routes)


@dataclass(frozen=True)
class EncoderShape:
    """What an encoder's step costs depend on: its blocks' widths and heads, and how many tokens."""

    width: int
    heads: int
    mlp: int
    tokens: int

    @classmethod
    def of(cls, visual) -> EncoderShape | None:
        """The shape of a fast image encoder (encoder.EncoderBlock blocks), or None for another."""
        from .encoder import EncoderBlock

        block = next((m for m in visual.modules() if isinstance(m, EncoderBlock)), None)
        positions = getattr(visual, "positional_embedding", None)
        if block is None or positions is None:
            return None
        return cls(block.in_proj.weight.shape[1], block.heads, block.fc.weight.shape[0], positions.shape[0])

    def largest_matmul_flops(self, images: int) -> float:
        return 2.0 * self.tokens * images * self.width * self.mlp


# The shapes `das-ag bench-cpu` measures by name (no weights needed: only the shapes cost time).
KNOWN_SHAPES = {
    "ViT-B/32": EncoderShape(768, 12, 3072, 50),
    "ViT-B/16": EncoderShape(768, 12, 3072, 197),
    "ViT-L/14": EncoderShape(1024, 16, 4096, 257),
    "ViT-L/14@336px": EncoderShape(1024, 16, 4096, 577),
}


# -- the machine ------------------------------------------------------------------------------
CPUINFO = Path("/proc/cpuinfo")  # Linux's; elsewhere absent, and the model comes from the OS

# Arm CPUs name no model in /proc/cpuinfo: each core gives its designer (the implementer) and
# its design (the part number) instead, which tell a Neoverse N1 from a V1 as a model name does.
ARM_IMPLEMENTERS = {"0x41": "Arm", "0x48": "HiSilicon", "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple",
                    "0xc0": "Ampere"}


def _cpuinfo() -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return CPUINFO.read_text()
    return ""


def _cpuinfo_values(text: str, *names: str) -> list[str]:
    """The values of the cpuinfo fields called `names`, one per line that has one, in order."""
    found = []
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() in names:
            found.append(value.strip())
    return found


def _arm_cores(text: str) -> str | None:
    """'Arm part 0xd40' (or 'Arm part 0xd05+0xd0b' where big and little cores differ), from the
    implementer and part of each core; None where cpuinfo gives neither (not an Arm CPU)."""
    implementers, parts = _cpuinfo_values(text, "CPU implementer"), _cpuinfo_values(text, "CPU part")
    if not implementers or len(implementers) != len(parts):
        return None
    cores = list(dict.fromkeys(zip(implementers, parts)))  # each design once, in the kernel's order
    designers = list(dict.fromkeys(ARM_IMPLEMENTERS.get(i.lower(), f"implementer {i}") for i, _ in cores))
    return f"{'+'.join(designers)} part {'+'.join(part for _, part in cores)}"


def cpu_model() -> str:
    """The CPU's model name, as the OS gives it (an Arm Linux CPU's implementer and part)."""
    text = _cpuinfo()
    named = _cpuinfo_values(text, "model name", "Model")
    if named and named[0]:
        return named[0]
    if arm := _arm_cores(text):
        return arm
    if platform.system() == "Darwin":
        import subprocess

        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.processor()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix flags that decide matmul speed (Linux; empty elsewhere)."""
    features = _cpuinfo_values(_cpuinfo(), "flags", "Features")
    return sorted(f for f in (features[0] if features else "").split()
                  if f.startswith(("avx", "amx", "fma", "asimd", "sve", "bf16", "i8mm")))


# oneDNN's instruction sets below the first with bfloat16 dot products (avx512_core_bf16): capped
# at one of these (ONEDNN_MAX_CPU_ISA), oneDNN emulates bfloat16 even where the CPU has it.
ONEDNN_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def onednn_cap() -> str | None:
    """The instruction set oneDNN is capped at (ONEDNN_MAX_CPU_ISA, or its old name), if any."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap and cap.strip() else None


def bf16_emulated_by_cap() -> bool:
    """Whether oneDNN is capped below its bfloat16 kernels, so bfloat16 is emulated here (slower
    than float32) even on a CPU that has them: ONEDNN_MAX_CPU_ISA=AVX2 runs as a laptop would."""
    return onednn_cap() in ONEDNN_WITHOUT_BF16


# The units whose presence changes which route is fastest, and the flags that name them: x86's
# (avx512_bf16, AMX) and Arm's (bf16 dot products, SVE), which aten's dispatch level alone does
# not show (it says DEFAULT on most Arm CPUs, with or without them). Not Arm's "sme": on an AMD
# CPU the same word is Secure Memory Encryption.
UNITS = (("bf16", ("avx512_bf16", "bf16")), ("amx", ("amx_bf16",)), ("sve", ("sve",)))


def instruction_sets() -> str:
    """The vector code the kernels run: aten's dispatch level (ATEN_CPU_CAPABILITY can lower it),
    the CPU's bfloat16 and AMX units, and oneDNN's cap where one is set. Part of a route's key:
    the model name alone does not tell them apart (a VM says "AMD EPYC" whatever its generation,
    and a capped process runs other kernels on the same chip), and the fastest route follows them."""
    import torch

    flags = set(cpu_flags())
    units = [unit for unit, names in UNITS if flags.intersection(names)]
    cap = onednn_cap()
    return " ".join([torch.backends.cpu.get_cpu_capability(), *units] + ([f"onednn<={cap}"] if cap else []))


def route_key(shape: EncoderShape, dtype, images: int) -> str:
    import torch

    return (f"{cpu_model()} | {instruction_sets()} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
            f"{str(dtype).removeprefix('torch.')} | width {shape.width} heads {shape.heads} mlp {shape.mlp} "
            f"tokens {shape.tokens} x {images}")


# -- timing -----------------------------------------------------------------------------------
def _seconds(work) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def _block_work(route: CpuRoute, shape: EncoderShape, images: int, dtype):
    """BLOCKS_TIMED encoder blocks' forward and input gradient, as a step runs them by `route`: their
    linears, norms, activations, casts and attention together, so that what a step pays around a
    matmul (a packed weight's layouts, autocast's casts, weights read from memory) counts as it
    does in a step, where the linears timed alone left some of it out."""
    import torch
    from torch import nn

    from .encoder import EncoderBlock, with_cpu_route

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc, self.c_proj = nn.Linear(shape.width, shape.mlp), nn.Linear(shape.mlp, shape.width)

    # CLIP's ResidualAttentionBlock's parts, as EncoderBlock reads them (clip's own class fixes the
    # MLP at 4x the width; open_clip's larger shapes have other widths, which EncoderShape keeps).
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(shape.width, shape.heads)
            self.ln_1, self.ln_2, self.mlp = nn.LayerNorm(shape.width), nn.LayerNorm(shape.width), Mlp()

    with torch.random.fork_rng(devices=[]):  # a measurement mid-run leaves the run's random draws alone
        torch.manual_seed(0)
        stack = nn.Sequential(*(EncoderBlock(Block().requires_grad_(False)) for _ in range(BLOCKS_TIMED)))
        x = torch.randn(shape.tokens, images, shape.width).requires_grad_()
        grad = torch.randn(shape.tokens, images, shape.width)
    routed = with_cpu_route(stack, route, dtype)

    def work():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = routed(x)
        out.backward(grad.to(out.dtype))
        x.grad = None

    return work


def _attention_work(route: CpuRoute, shape: EncoderShape, images: int, dtype):
    """One block's attention forward and backward, as the encoder runs it by `route`."""
    import torch

    from .encoder import attention_by_route

    generator = torch.Generator().manual_seed(0)
    qkv = (torch.randn(shape.tokens, images, 3 * shape.width, generator=generator) * 0.1).to(dtype).requires_grad_()
    grad = torch.randn(shape.tokens, images, shape.width, generator=generator).to(dtype)

    def work():
        out = attention_by_route(qkv, shape.heads, None, route)
        out.backward(grad)
        qkv.grad = None

    return work


def _fastest(candidates: dict, trials: int = TRIALS) -> tuple[object, dict, list]:
    """The candidate whose work ran fastest (each warmed once, then timed `trials` times,
    interleaved so that a drift of the machine's speed touches every one alike), and the times.
    A candidate whose warm-up ran OUTRUN times slower than another's is not timed again (its
    warm-up is its time): it cannot win, and where a torch has only a reference build of a kernel
    (oneDNN without its Arm library, say) three more runs of it would hold up a first run for
    minutes. Returns the winner, each candidate's seconds, and those not timed again."""
    warm = {name: _seconds(work) for name, work in candidates.items()}
    quickest = min(warm.values())
    timed = {name: work for name, work in candidates.items() if warm[name] <= OUTRUN * quickest}
    times = {name: [] for name in timed}
    for _ in range(trials):
        for name, work in timed.items():
            times[name].append(_seconds(work))
    best = {name: min(times[name]) if name in times else warm[name] for name in candidates}
    return min(best, key=best.get), best, [name for name in candidates if name not in timed]


def measure_route(shape: EncoderShape, dtype, images: int) -> tuple[CpuRoute, dict]:
    """Time every route for `images` images of `shape` in `dtype`: the fastest, and the seconds
    of each candidate. The attention's group size (or SDPA) is chosen on the attention alone,
    then the linears' route on whole blocks running that attention (seconds a block)."""
    from .encoder import packing_available

    groups = sorted({min(shape.heads, 2**k) for k in range(8) if 2**k <= 2 * shape.heads})
    attentions = [CpuRoute(LEGACY_ROUTE.linear, "blocked", g) for g in groups] + [CpuRoute(LEGACY_ROUTE.linear, "sdpa")]
    attention_work = {r: _attention_work(r, shape, images, dtype) for r in attentions}
    best, attention_times, slow_attentions = _fastest(attention_work)
    linears = [CpuRoute(r, best.attention, best.heads) for r in LINEARS if r != "packed" or packing_available(dtype)]
    route, block_times, slow_linears = _fastest({r: _block_work(r, shape, images, dtype) for r in linears})
    figures = {"block": {r.linear: round(v / BLOCKS_TIMED, 6) for r, v in block_times.items()},
               "attention": {str(k).partition("+")[2]: round(v, 6) for k, v in attention_times.items()},
               # the candidates run once only, over OUTRUN times slower than the quickest
               "outrun": [r.linear for r in slow_linears] + [str(r).partition("+")[2] for r in slow_attentions]}
    _last_figures.clear()
    _last_figures.update(figures)
    return route, figures


_last_figures: dict = {}


def last_figures() -> dict:
    """The seconds of each candidate in this process's last measurement (for `das-ag bench-cpu`)."""
    return dict(_last_figures)


# -- the cache --------------------------------------------------------------------------------
def _cache_path() -> Path:
    from .weights import cache_dir

    return cache_dir() / CACHE_FILE


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data["routes"] if data.get("version") == CACHE_VERSION and isinstance(data.get("routes"), dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # none yet, or damaged: measured again and written anew


@contextlib.contextmanager
def _locked(path: Path):
    """One process at a time measures and writes (the others then read what it chose), so two
    processes on one machine, say a plan's workers, never take different routes for a shape."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        try:
            import fcntl
        except ImportError:  # Windows: no lock, at worst two processes measure the same shape
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_chosen: dict[str, CpuRoute] = {}  # this process's routes: read or measured once each


def chosen_route(shape: EncoderShape | None, dtype, images: int, *, again: bool = False) -> CpuRoute:
    """The route for `images` images of `shape` in `dtype` on this CPU: cached, or measured now
    (and cached) the first time; `again` measures anew. Shapes too small to time keep LEGACY_ROUTE."""
    from .encoder import packing_available

    if shape is None or (shape.largest_matmul_flops(images) < MEASURE_FROM_FLOPS and not again):
        return effective(LEGACY_ROUTE, dtype)
    key = route_key(shape, dtype, images)
    if key in _chosen and not again:
        return _chosen[key]
    path = _cache_path()
    try:
        with _locked(path):
            cached = _read_cache(path)
            entry = cached.get(key)
            if again or not isinstance(entry, dict):
                route, figures = measure_route(shape, dtype, images)
                cached[key] = {"route": str(route), "seconds": figures,
                               "flags": " ".join(cpu_flags()), "packing": packing_available(dtype)}
                _write(path, cached)
                entry = cached[key]
            route = CpuRoute.parse(entry["route"])
    except (OSError, ValueError):
        # An unwritable or damaged cache costs a measurement per process, never a run.
        route, _ = measure_route(shape, dtype, images)
    _chosen[key] = effective(route, dtype)
    return _chosen[key]


def _write(path: Path, routes: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"version": CACHE_VERSION, "routes": routes}, indent=1, sort_keys=True) + "\n")
    os.replace(temporary, path)


def effective(route: CpuRoute, dtype) -> CpuRoute:
    """The route as it runs here: packed linears become aten's where this torch and CPU cannot pack
    `dtype` (as they always have), so a recipe says what really ran."""
    from .encoder import packing_available

    if route.linear == "packed" and not packing_available(dtype):
        return CpuRoute("aten", route.attention, route.heads)
    return route


def cached_routes() -> dict:
    """Every route this machine's cache holds, by key (for `das-ag bench-cpu`)."""
    return _read_cache(_cache_path())
