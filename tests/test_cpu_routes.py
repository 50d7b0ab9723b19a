"""The CPU routes: each computes the encoder's function, the fastest is measured once per CPU,
torch, thread count, dtype and shape and cached, a run records the route it took, and a re-run
from its recipe takes it again."""

from __future__ import annotations

import json
import platform

import pytest
import torch

from das_ag import cpu_routes
from das_ag.cpu_routes import KNOWN_SHAPES, LEGACY_ROUTE, CpuRoute, EncoderShape, chosen_route
from das_ag.encoder import blocked_attention, packing_available, sdpa_attention, speed_up_image_encoder, with_cpu_route
from das_ag.engine import synthesize
from das_ag.errors import ConfigError, DasAgError
from das_ag.png import batch_from_recipe, build_recipe, config_from_png, read_recipe, recorded_route

from .conftest import small_config
from .test_encoder import encode_with_input_grad, small_vision_clip

ROUTES = ["packed+blocked", "packed+blocked-1", "aten+blocked-2", "aten+sdpa", "packed+sdpa"]


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    """Each test sees only its own cache folder (conftest) and none of this process's choices."""
    monkeypatch.setattr(cpu_routes, "_chosen", {})


def test_routes_are_written_and_read_one_way():
    for text in ROUTES:
        assert str(CpuRoute.parse(text)) == text
    assert CpuRoute.parse("packed") == LEGACY_ROUTE == CpuRoute("packed", "blocked", 0)
    assert cpu_routes.parse_routes("auto") is None
    assert cpu_routes.parse_routes("aten+sdpa,packed") == (CpuRoute("aten", "sdpa"), LEGACY_ROUTE)
    assert cpu_routes.describe_routes((CpuRoute("aten", "sdpa"),) * 2) == "aten+sdpa"


@pytest.mark.parametrize("bad", ["fast", "packed+flash", "aten+sdpa-4", "packed+blocked-0", "packed+blocked-x", ""])
def test_a_bad_route_is_one_line(bad):
    with pytest.raises(ConfigError, match="cpu route: .* is not a CPU route"):
        small_config(cpu_route=bad)


@pytest.mark.parametrize("queries", [7, 1])  # every token, and the class token alone
def test_sdpa_attention_is_the_blocked_attention(queries):
    qkv = torch.randn(7, 2, 3 * 5 * 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sdpa_attention(t, 5, queries), (qkv,))
    assert torch.allclose(sdpa_attention(qkv, 5, queries), blocked_attention(qkv, 5, queries), atol=1e-12)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_route_computes_what_clip_computes(route, dtype):
    visual = small_vision_clip(width=256).visual  # 4 heads, so groups of 1 and 2 heads differ
    plain = encode_with_input_grad(visual, x := torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    speed_up_image_encoder(visual)
    routed = with_cpu_route(visual, CpuRoute.parse(route), dtype)
    e, g = encode_with_input_grad(routed, x, dtype)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    for got, want in ((e, plain[0]), (g, plain[1])):
        assert ((got - want).norm() / want.norm()).item() < tolerance
    again = encode_with_input_grad(routed, x, dtype)
    assert torch.equal(again[0], e) and torch.equal(again[1], g)  # one route, the same bits
    packed = any(getattr(m, "packed", None) is not None for m in routed.modules())
    assert packed == (route.startswith("packed") and packing_available(dtype))


def test_the_route_is_measured_once_cached_and_read_again(tmp_path):
    shape, views = KNOWN_SHAPES["ViT-B/32"], 8  # above the size where timings mean something
    route = chosen_route(shape, torch.float32, views)
    cache = json.loads((tmp_path / "cache" / "cpu-routes.json").read_text())["routes"]
    (key, entry), = cache.items()
    assert key == cpu_routes.route_key(shape, torch.float32, views)
    assert cpu_routes.cpu_model() in key and torch.__version__ in key and "width 768 heads 12" in key
    assert CpuRoute.parse(entry["route"]) == route
    # The fastest of what was timed: its attention alone, then whole blocks by each linear route.
    seconds = entry["seconds"]
    assert route.linear == min(seconds["block"], key=seconds["block"].get)
    assert str(route).partition("+")[2] == min(seconds["attention"], key=seconds["attention"].get)
    # A later process reads the file: written by hand to another route, that route is taken.
    other = CpuRoute("aten" if route.linear == "packed" else "packed", "sdpa")
    entry["route"] = str(other)
    (tmp_path / "cache" / "cpu-routes.json").write_text(json.dumps({"version": cpu_routes.CACHE_VERSION, "routes": cache}))
    cpu_routes._chosen.clear()
    assert chosen_route(shape, torch.float32, views) == cpu_routes.effective(other, torch.float32)
    # Another shape, dtype or batch is measured on its own.
    chosen_route(shape, torch.float32, views + 1)
    assert len(json.loads((tmp_path / "cache" / "cpu-routes.json").read_text())["routes"]) == 2


def test_a_damaged_cache_is_measured_again(tmp_path):
    (tmp_path / "cache").mkdir(exist_ok=True)
    (tmp_path / "cache" / "cpu-routes.json").write_text("{not json")
    route = chosen_route(KNOWN_SHAPES["ViT-B/32"], torch.float32, 8)
    assert json.loads((tmp_path / "cache" / "cpu-routes.json").read_text())["routes"]
    assert route.linear in cpu_routes.LINEARS


def test_shapes_too_small_to_time_keep_the_old_route(models, tmp_path):
    shape = EncoderShape.of(models.clip.visual)
    assert shape is not None and shape.largest_matmul_flops(8) < cpu_routes.MEASURE_FROM_FLOPS
    assert chosen_route(shape, torch.float32, 8) == cpu_routes.effective(LEGACY_ROUTE, torch.float32)
    assert not (tmp_path / "cache" / "cpu-routes.json").exists()  # nothing timed, nothing written


@pytest.mark.parametrize("route", ["aten+sdpa", "packed+blocked-1"])
def test_a_run_records_its_route_and_its_recipe_runs_it_again(models, route):
    result = synthesize(small_config(steps=3, cpu_route=route), models).run()
    assert result.cpu_route == str(cpu_routes.effective(CpuRoute.parse(route), torch.float32))
    recipe = build_recipe(result)
    assert recipe["run"]["cpu_route"] == result.cpu_route
    # An "auto" run's recipe holds "auto" in its config and the route in its run: a re-run takes the route.
    recipe["config"]["cpu_route"] = "auto"
    (again,), _ = batch_from_recipe(recipe)
    assert again.cpu_route == "auto" and recorded_route(recipe) == result.cpu_route
    remade = synthesize(again, models, cpu_route=recorded_route(recipe)).run()
    assert remade.image.tobytes() == result.image.tobytes() and remade.cpu_route == result.cpu_route
    assert remade.config == again  # still "auto": its recipe is the same bytes


def test_routes_sum_differently_so_the_recipe_must_name_one(models):
    images = {route: synthesize(small_config(steps=4, cpu_route=route), models).run().image.tobytes()
              for route in ("aten+sdpa", "packed+blocked")}
    if not packing_available(torch.float32):
        pytest.skip("this torch cannot pack float32 weights: both routes are aten's")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        # On Arm, aten's float32 linear is oneDNN's matmul on the Arm Compute Library's gemm, as the
        # packed one is: the same sums (seen on aarch64 torch 2.15), so the images may not differ.
        pytest.skip("packed and aten linears differ in their sums on x86 (oneDNN's kernels against MKL's)")
    assert images["aten+sdpa"] != images["packed+blocked"]


def test_an_older_recipe_replays_the_packed_route_and_a_gpu_recipe_none():
    config = small_config().to_dict()
    assert config["cpu_route"] == "auto"
    assert recorded_route({"config": config, "run": {"device": "cpu", "status": "completed"}}) == "packed+blocked"
    assert recorded_route({"config": config, "run": {"device": "cuda:0", "status": "completed"}}) is None
    with pytest.raises(DasAgError, match="the recipe's cpu route is damaged"):
        recorded_route({"config": config, "run": {"device": "cpu", "cpu_route": "warp+drive"}})


def test_the_cli_records_the_route_and_from_png_makes_the_same_bytes(weights_env, tmp_path):
    from das_ag.cli import main

    out, again = tmp_path / "r.png", tmp_path / "again.png"
    args = ["generate", "--prompt", "a kite", "--steps", "3", "--copies", "2", "--resolution", "64", "--device", "cpu",
            "--quiet"]
    assert main([*args, "--cpu-route", "aten+sdpa", "--out", str(out)]) == 0
    recipe = read_recipe(out)
    assert recipe["config"]["cpu_route"] == "aten+sdpa" and recipe["run"]["cpu_route"] == "aten+sdpa"
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()
    assert config_from_png(out).cpu_route == "aten+sdpa"
    # "auto" in the config: the re-run takes the route the recipe's run took, and the bytes repeat.
    auto, auto_again = tmp_path / "auto.png", tmp_path / "auto-again.png"
    assert main([*args, "--out", str(auto)]) == 0
    assert read_recipe(auto)["run"]["cpu_route"] in ("packed+blocked", "aten+blocked")
    assert main(["generate", "--from-png", str(auto), "--out", str(auto_again), "--quiet"]) == 0
    assert auto_again.read_bytes() == auto.read_bytes()


def test_an_ensemble_takes_one_route_each_or_one_for_all(tiny_clip_path, tiny_open_clip, head_path):
    from das_ag.models import load_models

    models = load_models([str(tiny_clip_path), tiny_open_clip], str(head_path), "cpu")
    config = small_config(steps=2, resolution=64, clip_models=(str(tiny_clip_path), tiny_open_clip))
    both = synthesize(config.replace(cpu_route="aten+sdpa,packed+blocked-1"), models).run()
    assert both.cpu_route == str(cpu_routes.effective(CpuRoute("aten", "sdpa"), torch.float32)) + "," + str(
        cpu_routes.effective(CpuRoute("packed", "blocked", 1), torch.float32))
    with pytest.raises(ConfigError, match="names 3 routes but the run has 2 encoders"):
        synthesize(config.replace(cpu_route="aten,aten,aten"), models)


def test_bench_cpu_measures_again_and_says_what_it_chose(tmp_path, capsys):
    from das_ag.cli import main

    assert main(["bench-cpu", "--shape", "ViT-B/32", "--views", "4", "--dtype", "float32"]) == 0
    said = capsys.readouterr().out
    entry, = json.loads((tmp_path / "cache" / "cpu-routes.json").read_text())["routes"].values()
    assert f"float32: {entry['route']}" in said and "a block by linears" in said
    assert main(["bench-cpu", "--views", "0"]) == 1
    assert "--views must be from 1 to 1024" in capsys.readouterr().err


def test_a_process_with_lesser_kernels_keys_its_routes_apart_and_runs_float32(tmp_path, monkeypatch):
    """Capped at AVX2 (as a laptop's CPU runs), the same chip takes other kernels: its routes must
    not be read from the uncapped process's cache, and bfloat16 is emulated there, so auto is float32."""
    import os
    import subprocess
    import sys

    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    shape = KNOWN_SHAPES["ViT-B/32"]
    here = cpu_routes.route_key(shape, torch.float32, 8)
    assert cpu_routes.instruction_sets() in here and "onednn<=" not in here
    probe = ("import json, torch; from das_ag import cpu_routes; from das_ag.engine import resolve_dtype; "
             "print(json.dumps([cpu_routes.route_key(cpu_routes.KNOWN_SHAPES['ViT-B/32'], torch.float32, 8), "
             "resolve_dtype('auto', torch.device('cpu'))]))")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="avx2", ATEN_CPU_CAPABILITY="avx2")
    capped, dtype = json.loads(subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True,
                                              text=True).stdout)
    assert capped != here and "onednn<=AVX2" in capped
    assert dtype == "float32"
    if "avx2" in cpu_routes.cpu_flags():  # an x86 CPU with AVX2: aten's kernels drop to it too
        assert capped.split(" | ")[1].startswith("AVX2 ")


# /proc/cpuinfo as Linux writes it on three CPUs: each field a tab-aligned name, a colon and a value,
# one paragraph a core (two cores each; the flags cut to those that matter and a few beside them).
GRAVITON3 = "".join(f"""processor\t: {n}
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1

""" for n in range(2))
NEOVERSE_N1 = GRAVITON3.replace("0xd40", "0xd0c").replace(  # Graviton2: no SVE, no bf16
    GRAVITON3.split("Features\t: ")[1].split("\n")[0],
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs")
BIG_LITTLE = GRAVITON3.replace("0xd40", "0xd05", 1).replace("0xd40", "0xd0b", 1)
EPYC = "".join(f"""processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma sme sev sev_es avx512f avx512bw avx512_bf16 avx512_vnni
vmx flags\t: vnmi
bugs\t\t: sysret_ss_attrs

""" for n in range(2))


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Makes the CPU routes read `text` as this machine's /proc/cpuinfo."""
    def use(text: str | None):
        path = tmp_path / "cpuinfo"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
        monkeypatch.setattr(cpu_routes, "CPUINFO", path)
    return use


def test_an_arm_cpu_is_named_by_its_cores_and_units(cpuinfo):
    """Arm's cpuinfo has no model name: a Neoverse V1 (Graviton3) and an N1 (Graviton2) would both
    have been 'aarch64', and torch's dispatch level says DEFAULT on both, so their routes shared a key."""
    shape = KNOWN_SHAPES["ViT-L/14"]
    cpuinfo(GRAVITON3)
    assert cpu_routes.cpu_model() == "Arm part 0xd40"
    assert {"bf16", "sve", "asimd", "i8mm"} <= set(cpu_routes.cpu_flags())
    assert cpu_routes.instruction_sets().split()[1:] == ["bf16", "sve"]
    v1 = cpu_routes.route_key(shape, torch.float32, 8)
    cpuinfo(NEOVERSE_N1)
    assert cpu_routes.cpu_model() == "Arm part 0xd0c" and cpu_routes.instruction_sets().split()[1:] == []
    assert cpu_routes.route_key(shape, torch.float32, 8) != v1
    cpuinfo(BIG_LITTLE)  # a phone's or laptop's big and little cores: both designs, in order
    assert cpu_routes.cpu_model() == "Arm part 0xd05+0xd0b"


def test_an_x86_cpu_is_named_by_its_model_and_amd_memory_encryption_is_no_unit(cpuinfo):
    cpuinfo(EPYC)
    assert cpu_routes.cpu_model() == "AMD EPYC 9654 96-Core Processor"  # not "model : 17"
    assert "sme" not in cpu_routes.cpu_flags() and "avx512_bf16" in cpu_routes.cpu_flags()
    assert cpu_routes.instruction_sets().split()[1:] == ["bf16"]


def test_without_cpuinfo_the_model_comes_from_the_os(cpuinfo):
    cpuinfo(None)  # macOS, Windows
    assert cpu_routes.cpu_flags() == [] and cpu_routes.cpu_model()


def test_a_candidate_far_slower_on_its_first_run_is_not_timed_again():
    import time

    runs = {"quick": 0, "close": 0, "reference": 0}

    def work(name, seconds):
        def run():
            runs[name] += 1
            time.sleep(seconds)
        return run

    # Margins wide enough for a loaded machine's oversleeping: the slow one is 10x past the cut.
    quick = 0.02
    slow = 10 * cpu_routes.OUTRUN * quick
    candidates = {"quick": work("quick", quick), "close": work("close", 2 * quick), "reference": work("reference", slow)}
    best, seconds, outrun = cpu_routes._fastest(candidates)
    assert best == "quick" and outrun == ["reference"]
    assert runs == {"quick": 1 + cpu_routes.TRIALS, "close": 1 + cpu_routes.TRIALS, "reference": 1}
    assert seconds["reference"] >= slow  # its one run, reported as its time
