"""The engine on the tiny CLIP and the real aesthetic head: the behaviour a user would notice."""

from __future__ import annotations

import io
import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from das_ag.engine import synthesize
from das_ag.errors import DeviceError
from das_ag.models import ModelBundle, load_models
from das_ag.prompts import Prompt
from das_ag.schedules import Schedule

from .conftest import small_config


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_the_sign_of_the_aesthetic_term_steers_the_score(models):
    # Text guidance off: only the aesthetic term acts, from the same seed and starting image.
    base = small_config(steps=40, seed=3, terms={"text": {"weight": 0.0}, "aesthetic": {"weight": Schedule.constant(3.0)}})
    reward = synthesize(base.with_guidance("reward"), models).run()
    penalty = synthesize(base.with_guidance("penalty"), models).run()
    start = reward.initial_scores.aesthetic
    assert penalty.initial_scores.aesthetic == start
    assert reward.scores.aesthetic > start + 0.1
    assert penalty.scores.aesthetic < start - 0.1
    assert reward.scores.aesthetic > penalty.scores.aesthetic


def test_off_leaves_the_aesthetic_term_out_of_the_loss(models):
    run = synthesize(small_config(steps=3, terms={"aesthetic": {"guidance": "off", "weight": Schedule.constant(3.0)}}), models)
    # The weight it reports (the studio's "aesthetic score and its weight" chart) is the 0 it applies.
    assert all(event.terms["aesthetic"] == 0 and event.metrics["aesthetic"]["weight"] == 0 for event in run)


def test_text_guidance_raises_clip_similarity(models):
    # The tiny random CLIP has a narrow similarity range: 40 guided steps gain about 0.01-0.015,
    # while the same run without text guidance does not move at all.
    guided_run = synthesize(small_config(steps=40, seed=1, terms={"aesthetic": {"guidance": "off"}, "text": {"weight": 5.0}}), models)
    events = list(guided_run)
    guided = guided_run.result()
    unguided = synthesize(small_config(steps=40, seed=1, terms={"aesthetic": {"guidance": "off"}, "text": {"weight": 0.0}}), models).run()
    start = guided.initial_scores.clip_positive
    assert guided.scores.clip_positive > start + 0.005
    assert unguided.scores.clip_positive == pytest.approx(start, abs=1e-4)
    assert events[-1].metrics["text"]["clip_positive"] > events[0].metrics["text"]["clip_positive"]


def test_negative_prompts_are_pushed_away(models):
    config = small_config(prompts=(Prompt("a red apple"), Prompt("a blue car", -1.0)), steps=40, seed=2, terms={"aesthetic": {"guidance": "off"}})
    result = synthesize(config, models).run()
    gap_before = result.initial_scores.clip_positive - result.initial_scores.clip_negative
    gap_after = result.scores.clip_positive - result.scores.clip_negative
    assert gap_after > gap_before


def test_same_seed_same_png_other_seed_other_png(models):
    a = synthesize(small_config(seed=11), models).run()
    b = synthesize(small_config(seed=11), models).run()
    c = synthesize(small_config(seed=12), models).run()
    assert png_bytes(a.image) == png_bytes(b.image)
    assert a.scores == b.scores
    assert png_bytes(a.image) != png_bytes(c.image)


def test_events_carry_every_term_and_schedule(models):
    config = small_config(steps=5, prompts=(Prompt("a cat"), Prompt("a dog", -0.5)), terms={"tv": {"weight": 0.01}, "l1": {"weight": 0.01}})
    events = list(synthesize(config, models))
    assert [e.step for e in events] == [1, 2, 3, 4, 5]
    for e in events:
        assert set(e.terms) == {"text", "aesthetic", "tv", "l1"}
        assert e.loss == pytest.approx(sum(e.terms.values()), abs=1e-5)
        assert set(e.metrics["text"]) == {"clip_positive", "clip_negative"} and e.terms["tv"] > 0 and e.terms["l1"] > 0
        assert set(e.metrics["aesthetic"]) == {"score", "weight"}
    assert events[0].metrics["aesthetic"]["weight"] == 0.0 < events[-1].metrics["aesthetic"]["weight"]  # exp_decay 0 -> 3
    assert events[0].lr == pytest.approx(0.1) and events[-1].lr < events[0].lr  # cosine annealing
    assert events[-1].elapsed > 0


def test_previews_arrive_when_asked(models):
    events = list(synthesize(small_config(steps=7), models, preview_every=3))
    with_preview = [e.step for e in events if e.preview is not None]
    assert with_preview == [3, 6, 7]
    assert events[2].preview.size == (224, 224)


def test_stop_keeps_the_image_made_so_far(models):
    run = synthesize(small_config(steps=50), models)
    for event in run:
        if event.step == 4:
            preview = run.preview()
            run.stop()
    result = run.result()
    assert (result.status, result.steps_done) == ("cancelled", 4)
    assert png_bytes(result.image) == png_bytes(preview)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_image(tiny_clip_path, broken_head_path):
    broken_models = load_models(str(tiny_clip_path), str(broken_head_path), "cpu")
    # A constant weight puts the infinite score in the loss from the first step (an exp_decay
    # weight starts at 0, and a term with weight 0 stays out of the loss).
    run = synthesize(small_config(steps=10, terms={"aesthetic": {"weight": Schedule.constant(3.0)}}), broken_models)
    start = run.preview()
    assert list(run) == []
    result = run.result()
    assert result.status == "non_finite" and "non-finite" in result.message and result.steps_done == 0
    assert png_bytes(result.image) == png_bytes(start)


def test_long_prompts_warn_and_run(models):
    text = "an extremely detailed oil painting of " + "a quiet harbour with boats " * 30
    run = synthesize(small_config(prompts=(Prompt(text),), steps=2), models)
    assert len(run.warnings) == 1 and "truncated" in run.warnings[0]
    assert run.run().steps_done == 2


@pytest.mark.parametrize(
    "changes", [dict(canvas_settings={"levels": "all"}, resolution=48, steps=2),
                dict(canvas_settings={"combine": "sum", "fill": "zeros", "interpolation": "bicubic", "coarse_lr": 2.0}, steps=2),
                dict(resolution=300, steps=2)]
)
def test_other_parameterisations_run(models, changes):
    run = synthesize(small_config(**changes), models)
    start = png_bytes(run.preview())
    result = run.run()
    assert result.image.size == (changes.get("resolution", 224),) * 2 and result.status == "completed"
    assert png_bytes(result.image) != start  # the steps really moved this parameterisation's pixels


# The fast mode's quality guard: bfloat16 must end within these of float32 from the same seed.
BF16_TOLERANCE = {"clip_positive": 0.02, "aesthetic": 0.1}


def test_bfloat16_stays_close_to_float32(models):
    full = synthesize(small_config(steps=20, seed=4, dtype="float32"), models).run()
    fast = synthesize(small_config(steps=20, seed=4, dtype="bfloat16"), models).run()
    assert (full.dtype, fast.dtype) == ("float32", "bfloat16")
    assert fast.scores.clip_positive == pytest.approx(full.scores.clip_positive, abs=BF16_TOLERANCE["clip_positive"])
    assert fast.scores.aesthetic == pytest.approx(full.scores.aesthetic, abs=BF16_TOLERANCE["aesthetic"])
    assert png_bytes(fast.image) != png_bytes(full.image)  # really two modes


def test_auto_precision_is_recorded_as_what_ran(models):
    from das_ag.engine import native_bf16

    result = synthesize(small_config(steps=2), models).run()
    assert result.dtype == ("bfloat16" if native_bf16(torch.device("cpu")) else "float32")
    assert result.recipe()["run"]["dtype"] == result.dtype and result.config.dtype == "auto"


def test_float32_is_bit_reproducible(models):
    a = synthesize(small_config(steps=6, dtype="float32"), models).run()
    b = synthesize(small_config(steps=6, dtype="float32"), models).run()
    assert png_bytes(a.image) == png_bytes(b.image)


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_a_compiled_step_matches_eager_and_the_recipe_says_it_ran_compiled(models):
    eager = synthesize(small_config(steps=3, dtype="float32"), models).run()
    run = synthesize(small_config(steps=3, dtype="float32", compile=True), models)
    compiled = run.run()
    # Asked for on the CPU, it compiled and ran compiled, with no warning, and the recipe says so.
    assert run.compiled and compiled.compiled and not run.warnings and not compiled.warnings
    assert compiled.recipe()["run"]["compiled"] is True and compiled.recipe()["config"]["compile"] is True
    assert compiled.scores.aesthetic == pytest.approx(eager.scores.aesthetic, abs=1e-3)
    assert compiled.scores.clip_positive == pytest.approx(eager.scores.clip_positive, abs=1e-4)


def test_the_step_is_compiled_once_not_per_step_seed_or_prompt(models):
    # The scheduled weights and augmentation strengths change at every step; a compiled step that
    # depended on them (or on the step number) would be compiled again and again, and past
    # dynamo's limit run eagerly. A new seed, another prompt and more steps reuse its graphs.
    base = dict(steps=6, dtype="float32", compile=True, prompts=(Prompt("a red circle"), Prompt("blurry", -0.3)))
    first = synthesize(small_config(**base), models)
    first.run()
    graphs = compiled_graphs()
    again = synthesize(small_config(**{**base, "seed": 7, "steps": 11,
                                       "prompts": (Prompt("a green square"), Prompt("dark", -0.5))}), models)
    result = again.run()
    assert not again.warnings and result.steps_done == 11
    assert compiled_graphs() == graphs


def test_nothing_that_changes_per_step_recompiles_the_step(models, monkeypatch):
    # On a GPU the step is compiled for CUDA graphs, and then dynamo takes every Python number it
    # meets as a constant: a scheduled weight or augmentation strength read as a float would
    # compile the step again at every step. And each graph is recorded anew for every value of an
    # integer it takes: a step number reaching it would record one CUDA graph per step. So
    # per-step numbers enter as tensors (Term.at_step, AugmentDraws), and the strokes' rasteriser
    # runs outside. Here dynamo traces as it would for CUDA graphs: after the first steps nothing
    # is traced again, and each graph is called with the same integers at every step.
    import torch._inductor.config

    import das_ag.engine as engine

    integers = []  # per traced graph: the integer arguments of each call

    def recording_backend(graph, example_inputs):
        calls = set()
        integers.append(calls)

        def call(*args):
            calls.add(tuple(a for a in args if isinstance(a, int)))
            return graph.forward(*args)
        return call

    monkeypatch.setattr(engine, "compiled_step", lambda forward, device: torch.compile(forward, backend=recording_backend))
    configs = [small_config(steps=8, dtype="float32", compile=True, colour_shift=Schedule("linear", 0.2, 0.05), noise=Schedule("linear", 0.3, 0.1), canvas=canvas, terms={"aesthetic": {"weight": Schedule("linear", 0.5, 2.0)}})
               for canvas in ("pyramid", "strokes")]
    with torch._inductor.config.patch({"triton.cudagraphs": True}):
        run = synthesize(configs, models)
        traced = [len(integers) for _ in run]
    assert not run.warnings and traced[-1] > 0
    assert traced[1:] == [traced[1]] * len(traced[1:]), traced  # traced in the first steps only
    assert all(len(calls) <= 1 for calls in integers), integers


def test_a_weight_that_starts_at_zero_does_not_compile_the_step_twice(models, monkeypatch):
    # The paper's aesthetic weight is 0 at step 0 and not after. A term that tested that in
    # Python compiled the step a second time at step 1: ~40 s more of an H200's first run with
    # ViT-L/14. Such a run must trace as many graphs as one whose weight is never 0.
    import das_ag.engine as engine

    def graphs_traced(aesthetic):
        torch._dynamo.reset()
        traced = []

        def recording_backend(graph, example_inputs):
            traced.append(graph)
            return graph.forward

        monkeypatch.setattr(engine, "compiled_step", lambda forward, device: torch.compile(forward, backend=recording_backend))
        result = synthesize(small_config(steps=4, dtype="float32", compile=True, terms={"aesthetic": {"weight": aesthetic}}), models).run()
        assert result.status == "completed" and not result.warnings
        return len(traced)

    assert graphs_traced(Schedule("exp_decay", 0.0, 3.0, 0.06)) == graphs_traced(Schedule("linear", 0.5, 2.0)) > 0


def test_runs_in_other_threads_share_the_cuda_graph_trees():
    # The studio runs each job in a thread of its own. torch 2.11 keeps CUDA-graph tree managers
    # in state that only the thread which imported it has, and asserted in any other: on an H200
    # every compiled studio run fell back to eager. Each run's thread is given the process's
    # managers (one per device, as a script has); nothing here needs a GPU.
    import threading

    from torch._inductor import cudagraph_trees

    from das_ag.engine import share_cuda_graph_trees

    found = []

    def run_thread():
        share_cuda_graph_trees()
        found.append(cudagraph_trees.get_container(0))

    for _ in range(2):
        thread = threading.Thread(target=run_thread)
        thread.start()
        thread.join()
    assert len(found) == 2 and found[0] is found[1]


def test_other_weights_do_not_recompile_the_step(models, tmp_path, monkeypatch):
    # A studio user changes a weight and generates again: compiled for CUDA graphs, a step that
    # read the weight as a Python number would be compiled again (a minute on a GPU). Terms keep
    # the settings they multiply by as tensors (Term.number), so the second run traces nothing.
    import torch._inductor.config

    import das_ag.engine as engine

    monkeypatch.setattr(engine, "compiled_step", lambda forward, device: torch.compile(forward, backend="eager"))
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "red.png")

    def config(k: float):
        return small_config(steps=3, dtype="float32", compile=True, prompts=(Prompt("a red circle"), Prompt("blurry", -0.3)), terms={"ambiguity": {"guidance": "reward", "weight": 0.2 * k}, "image_prompt": {"images": f"{tmp_path / 'red.png'}:1"}, "init": {"image": str(tmp_path / "red.png"), "strength": 0.1 * k}, "symmetry": {"weight": 0.1 * k}, "palette": {"weight": 0.1 * k}, "colourfulness": {"weight": 0.1 * k}, "aesthetic": {"cap": 5 + k}, "text": {"weight": 2 * k}, "tv": {"weight": 0.1 * k}, "l1": {"weight": 0.1 * k}})

    with torch._inductor.config.patch({"triton.cudagraphs": True}):
        first = synthesize(config(1), models)
        first.run()
        graphs = compiled_graphs()
        second = synthesize(config(2), models)
        second.run()
    assert not first.warnings and not second.warnings
    assert compiled_graphs() == graphs


def test_the_step_breaks_only_at_the_cpus_own_kernels(models, tmp_path):
    # Every term, the pyramid and the augmentation trace into one graph: the only breaks are the
    # CPU encoder's oneDNN matmul and blocked attention (a GPU runs neither), so on a GPU the
    # whole forward of a pyramid run is one graph and one CUDA graph replay; the strokes'
    # rasteriser (tile binning, shapes that change every step) runs between graphs by design. A
    # term that syncs with the host or makes a value-dependent shape (a boolean mask) breaks the
    # graph and fails this.
    configs = [small_config(prompts=(Prompt("a red circle"), Prompt("blurry", -0.3)), seed=i, canvas=canvas, terms={"aesthetic": {"guidance": g}})
               for i, (g, canvas) in enumerate((("reward", "pyramid"), ("penalty", "pyramid"), ("off", "strokes")))]
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "red.png")
    picture = str(tmp_path / "red.png")
    every_term = configs[0].replace(seed=3, terms={"ambiguity": {"guidance": "reward"}, "image_prompt": {"images": f"{picture}:1"}, "init": {"image": picture}, "symmetry": {"weight": 0.5}, "palette": {"weight": 0.5}, "colourfulness": {"weight": 0.5}, "tv": {"weight": 0.1}, "l1": {"weight": 0.1}})
    run = synthesize([*configs, every_term], models)
    assert len(run.images[-1].terms) == 10
    run.models.make_image_encoders(run.dtype, routes=run.cpu_routes)
    prepared = [image.prepare(0) for image in run.images]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explained = torch._dynamo.explain(run._step_forward)(prepared)
    assert explained.op_count > 100  # it traced the step (the encoder's ops among them)
    reasons = [reason.reason for reason in explained.break_reasons]
    assert all(re.search(r"function (packed_linear|blocked_attention|StrokesCanvas.forward)\b", r) for r in reasons), reasons
    assert not [w for w in caught if "lru_cache" in str(w.message)]  # nothing rebuilt inside the graph


def test_a_compile_that_fails_runs_uncompiled_and_says_so(tiny_clip_path, head_path, tmp_path, monkeypatch):
    # No C++ compiler, an op the compiler cannot handle: the run goes on eagerly, with one warning,
    # and makes the image an uncompiled run makes. A bundle of its own keeps the broken compiled
    # encoder out of the other tests' cache.
    def broken_compile(module, **options):
        def fail(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return fail

    models = load_models(str(shutil.copy(tiny_clip_path, tmp_path / "clip.pt")), str(head_path), "cpu")
    eager = synthesize(small_config(steps=4, dtype="float32"), models).run()
    monkeypatch.setattr(torch, "compile", broken_compile)
    run = synthesize(small_config(steps=4, dtype="float32", compile=True), models)
    result = run.run()
    assert result.status == "completed" and result.steps_done == 4
    assert run.warnings == ("torch.compile failed (InvalidCxxCompiler: No working C++ compiler found); running uncompiled",)
    assert png_bytes(result.image) == png_bytes(eager.image)
    assert not result.compiled and result.recipe()["run"]["compiled"] is False  # what ran: eager


def test_compile_is_on_by_default_on_a_gpu_only(models, monkeypatch):
    # The default leaves compiling to the device: on a GPU the compiled step is ~5x faster after
    # a one-off compile (note/performance.md, an H200), on the CPU it gains little. Here, a CPU,
    # the default must not compile at all, and the recipe must say what ran.
    import das_ag.engine as engine
    from das_ag.engine import resolve_compile

    assert small_config().compile is None
    assert [resolve_compile(None, torch.device(d)) for d in ("cuda", "cuda:1", "cpu")] == [True, True, False]
    assert [resolve_compile(c, torch.device(d)) for c in (True, False) for d in ("cuda", "cpu")] == [True, True, False, False]

    def no_compiling(forward, device):
        raise AssertionError("the default compiled the step on the CPU")

    monkeypatch.setattr(engine, "compiled_step", no_compiling)
    run = synthesize(small_config(steps=2), models)
    result = run.run()
    assert not run.compiled and not result.warnings and result.recipe()["run"]["compiled"] is False
    assert result.recipe()["config"]["compile"] is None  # re-run elsewhere, it is decided there again


def test_a_step_asks_the_host_for_nothing(models, tmp_path):
    # What makes a GPU step wait for the GPU, seen on the CPU as the ops a step dispatches: a
    # tensor made from host numbers (a blocking copy to the device on a GPU), .item() (a read back),
    # nonzero or a boolean mask (a selection whose size must be read back). Past the first steps
    # (which make the constants), a step has none of them, whatever its terms; 448 px, so that
    # views are resized on the way to the encoder. On a GPU, test_a_cuda_step_never_waits_for_the_gpu
    # checks the same with CUDA's own sync debug mode.
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            # Adam's step counters are host tensors on every device (torch's choice): reading them
            # waits for nothing.
            if not any(arg is state.get("step") for arg in args for state in run.optimizer.state.values()):
                self.ops.append(str(func))
            indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
                self.ops.append("a boolean mask")  # on a GPU, its selection's size is read back
            return func(*args, **(kwargs or {}))

    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "red.png")
    config = small_config(resolution=448, steps=6, prompts=(Prompt("a red circle"), Prompt("blurry", -0.3)),
                          terms={"image_prompt": {"images": f"{tmp_path / 'red.png'}:1"}, "symmetry": {"weight": 0.5},
                                 "ambiguity": {"guidance": "reward"}, "colourfulness": {"weight": 0.5}})
    run = synthesize(config, models)
    watch = Watch()
    launch, apply = run._launch, run._apply

    def watched(step):
        def call(*args):
            if run.step < 2:
                return step(*args)
            with watch:
                return step(*args)
        return call

    run._launch, run._apply = watched(launch), watched(apply)
    assert run.run().status == "completed"
    asks = {"aten.lift_fresh.default", "aten._local_scalar_dense.default", "aten.nonzero.default", "a boolean mask"}
    assert watch.ops and not asks & set(watch.ops), sorted(asks & set(watch.ops))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_a_cuda_step_never_waits_for_the_gpu(tiny_clip_path, head_path, compile):
    # The loop reads a step's numbers once, a step later, so that the host prepares step t+1
    # while the GPU computes step t. Anything in a step that synchronises with the GPU (a blocking
    # copy to the device, .item(), a value-dependent shape) would make the host wait every step.
    # Past the first steps (loading, compiling, recording CUDA graphs), CUDA's sync debug mode
    # raises on any such wait; 448 px, so that views are resized on the way to the encoder.
    models = load_models(str(tiny_clip_path), str(head_path), "cuda")
    run = synthesize(small_config(device="cuda", resolution=448, steps=10, compile=compile), models)
    launch, apply = run._launch, run._apply

    def strict(step):
        def call(*args):
            if run.step < 4:
                return step(*args)
            torch.cuda.set_sync_debug_mode("error")
            try:
                return step(*args)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return call

    run._launch, run._apply = strict(launch), strict(apply)
    result = run.run()
    assert result.status == "completed" and not result.warnings, (result.message, result.warnings)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_config_without_a_gpu_is_refused(models):
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        synthesize(small_config(device="cuda"), models)


def test_a_failure_mid_run_keeps_the_image_so_far(models, monkeypatch):
    # Simulate the GPU running out of memory on the fourth encoder forward.
    run = synthesize(small_config(steps=10), models)
    real_encode, calls = ModelBundle.encode_images, []

    def flaky_encode(self, batch, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_encode(self, batch, **kwargs)

    monkeypatch.setattr(ModelBundle, "encode_images", flaky_encode)
    events = list(run)
    result = run.result()
    assert [e.step for e in events] == [1, 2, 3]
    assert result.status == "failed" and "out of memory" in result.message and result.steps_done == 3
    assert png_bytes(result.image) == png_bytes(run.preview())


COMPILE_TWICE = """
import sys, torch
from das_ag import GenerationConfig, Prompt, load_models, synthesize
from torch._dynamo.utils import counters
models = load_models(sys.argv[1], sys.argv[2], "cpu")
config = GenerationConfig(prompts=(Prompt("a kite"),), steps=2, augment_copies=2, dtype="float32", compile=True, device="cpu")
run = synthesize(config, models)
result = run.run()
assert not run.warnings, run.warnings
result.save(sys.argv[3])
print("hits", counters["inductor"]["fxgraph_cache_hit"], "misses", counters["inductor"]["fxgraph_cache_miss"])
"""


def test_a_second_process_reuses_the_compiled_kernels(tiny_clip_path, head_path, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["DAS_AG_CACHE_DIR"] = str(tmp_path / "cache")
    runs = [subprocess.run([sys.executable, "-c", COMPILE_TWICE, str(tiny_clip_path), str(head_path),
                            str(tmp_path / f"kite-{i}.png")], env=env, capture_output=True, text=True, timeout=600)
            for i in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    (first_hits, first_misses), (second_hits, second_misses) = [
        [int(w) for w in run.stdout.split()[-3::2]] for run in runs
    ]
    assert first_misses > 0 and first_hits == 0  # the first process compiles ...
    assert second_hits > 0 and second_misses == 0  # ... the second finds every kernel in das-ag's cache
    assert any((tmp_path / "cache" / "torch-compile").iterdir())
    # A compiled image made again in a new process (as `generate --from-png` does) is the same PNG.
    first, second = (tmp_path / "kite-0.png").read_bytes(), (tmp_path / "kite-1.png").read_bytes()
    if first != second and _only_initial_scores_differ(first, second) and torch.__version__ < "2.12":
        # Known under torch 2.11 (note/core.md): now and then the cache-hit process scores the
        # starting image through another eager path; its pixels are the same. Reported, not hidden.
        pytest.xfail("torch 2.11: the cache-hit process's initial scores took the other eager path")
    assert first == second


def _only_initial_scores_differ(first: bytes, second: bytes) -> bool:
    from das_ag.png import read_recipe

    a, b = read_recipe(first), read_recipe(second)
    a.pop("initial_scores"), b.pop("initial_scores")
    pixels = [np.asarray(Image.open(io.BytesIO(png))) for png in (first, second)]
    return a == b and np.array_equal(*pixels)
