"""The aesthetic slider on a tiny random Stable Diffusion: training moves the score the way its
sign says, LoRAs save, load, export and resume, and mistakes cost one line."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from das_ag.models import load_models

from das_ag.cli import main
from das_ag.errors import DasAgError
from das_ag.png import read_recipe

pytest.importorskip("diffusers", reason="the slider's optional extra is not installed (uv sync --extra slider)")

from das_ag.slider.base import load_base  # noqa: E402
from das_ag.slider.sample import sample  # noqa: E402
from das_ag.slider.denoise import guided_prediction, predicted_clean, prompt_conditions  # noqa: E402
from das_ag.slider.lora import export_kohya, read_lora  # noqa: E402
from das_ag.slider.train import SliderOutOfMemory, SliderSettings, SliderStopped, train  # noqa: E402

PROMPTS = ("a red house", "a blue boat", "a green tree")
FAST = dict(steps=30, lr=3e-3, resolution=64, inference_steps=6, prompts=PROMPTS, checkpoint_every=10)


def trained(tiny_sd_path, models, tmp_path, sign: str, **changes):
    base = load_base(tiny_sd_path, torch.device("cpu"))
    out = tmp_path / f"{sign}.safetensors"
    train(base, models, SliderSettings(sign=sign, **{**FAST, **changes}), out)
    return out


def mean_scores(tiny_sd_path, models, lora, weights=(-1.0, 0.0, 1.0)):
    base = load_base(tiny_sd_path, torch.device("cpu"))
    scores = {w: [] for w in weights}
    for prompt in PROMPTS:
        cells, _ = sample(base, models, lora, list(weights), prompt, [0, 1], steps=6, resolution=64)
        for cell in cells:
            scores[cell.weight].append(cell.aesthetic)
        base.pipe.unload_lora_weights()
    return {w: sum(v) / len(v) for w, v in scores.items()}


def test_reward_raises_and_penalty_lowers_the_score_and_minus_one_reverses(tiny_sd_path, models, tmp_path):
    up = mean_scores(tiny_sd_path, models, trained(tiny_sd_path, models, tmp_path, "reward"))
    down = mean_scores(tiny_sd_path, models, trained(tiny_sd_path, models, tmp_path, "penalty"))
    assert up[1.0] > up[0.0] > up[-1.0], up
    assert down[1.0] < down[0.0] < down[-1.0], down
    assert up[0.0] == pytest.approx(down[0.0])  # weight 0 is the base model in both


def test_a_lora_saves_with_its_recipe_loads_and_exports_for_kohya(tiny_sd_path, models, tmp_path):
    lora = trained(tiny_sd_path, models, tmp_path, "reward", steps=3)
    tensors, recipe = read_lora(lora)
    assert tensors and all(k.startswith("unet.") for k in tensors)
    assert recipe["settings"]["sign"] == "reward" and recipe["steps_done"] == 3
    assert recipe["base"]["sha256"] == load_base(tiny_sd_path, torch.device("cpu")).sha256
    kohya = export_kohya(lora, tmp_path / "kohya.safetensors")
    kohya_tensors, kohya_recipe = read_lora(kohya)
    assert all(k.startswith("lora_unet_") for k in kohya_tensors) and kohya_recipe == recipe
    assert sum(k.endswith(".alpha") for k in kohya_tensors) == sum(k.endswith("lora_down.weight") for k in kohya_tensors)

    # Both files give the same pictures at weight 1: the kohya copy is the same LoRA.
    pictures = []
    for path in (lora, kohya):
        base = load_base(tiny_sd_path, torch.device("cpu"))
        cells, _ = sample(base, models, path, [1.0], "a red house", [3], steps=4, resolution=64)
        pictures.append(cells[0].image.tobytes())
    assert pictures[0] == pictures[1]


def test_an_interrupted_training_continues_where_it_stopped(tiny_sd_path, models, tmp_path):
    whole = trained(tiny_sd_path, models, tmp_path, "reward", steps=12, checkpoint_every=4)
    out = tmp_path / "resumed.safetensors"
    calls = []
    base = load_base(tiny_sd_path, torch.device("cpu"))
    with pytest.raises(SliderStopped, match="stopped after 7 steps"):
        train(base, models, SliderSettings(sign="reward", **{**FAST, "steps": 12, "checkpoint_every": 4}), out,
              stop=lambda: len(calls) == 7, on_step=calls.append)
    assert out.with_name("resumed.checkpoint.pt").is_file() and not out.exists()
    base = load_base(tiny_sd_path, torch.device("cpu"))
    steps = []
    train(base, models, SliderSettings(sign="reward", **{**FAST, "steps": 12, "checkpoint_every": 4}), out,
          on_step=steps.append)
    assert [r.step for r in steps] == [8, 9, 10, 11, 12]
    assert read_lora(out)[0].keys() == read_lora(whole)[0].keys()
    assert all(torch.equal(a, b) for a, b in zip(read_lora(out)[0].values(), read_lora(whole)[0].values()))


def test_the_cli_trains_and_samples_a_scored_grid(tiny_sd_path, tiny_clip_path, head_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red house\na blue boat\n")
    lora = tmp_path / "beauty.safetensors"
    assert main(["slider", "train", "--base", str(tiny_sd_path), "--steps", "3", "--resolution", "64",
                 "--inference-steps", "4", "--prompts", str(prompts), "--out", str(lora), "--kohya",
                 str(tmp_path / "beauty-kohya.safetensors"), "--device", "cpu", "--quiet"]) == 0
    assert lora.is_file() and (tmp_path / "beauty-kohya.safetensors").is_file()
    capsys.readouterr()
    assert main(["recipe", str(lora)]) == 0  # the LoRA's recipe, as a PNG's is read
    assert json.loads(capsys.readouterr().out)["settings"]["steps"] == 3
    grid = tmp_path / "grid.png"
    assert main(["slider", "sample", "--base", str(tiny_sd_path), "--lora", str(lora), "--weights=-1,0,1",
                 "--prompt", "a red house", "--seeds", "0,1", "--steps", "4", "--resolution", "64", "--out", str(grid),
                 "--device", "cpu", "--quiet"]) == 0
    recipe = read_recipe(grid)
    assert read_lora(lora)[1]["settings"]["precision"] == "fp32"  # auto on the CPU
    assert recipe["config"]["precision"] == "fp32"
    assert [(c["seed"], c["weight"]) for c in recipe["cells"]] == [(s, w) for s in (0, 1) for w in (-1.0, 0.0, 1.0)]
    assert len(list(tmp_path.glob("grid-seed*-w*.png"))) == 6
    assert "LoRA weight +1: aesthetic" in capsys.readouterr().out


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    return err


def test_mistakes_get_one_line(tiny_sd_path, tiny_clip_path, head_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    common = ["--steps", "2", "--resolution", "64", "--device", "cpu", "--quiet"]
    not_sd = tmp_path / "photos"
    not_sd.mkdir()
    assert main(["slider", "train", "--base", str(not_sd), "--out", str(tmp_path / "x.safetensors"), *common]) != 0
    assert "is not a diffusers Stable Diffusion folder" in one_line(capsys)
    assert main(["slider", "train", "--base", str(tiny_sd_path.parent), "--out", str(tmp_path / "x.safetensors"),
                 *common]) != 0
    assert one_line(capsys).endswith(f"(no model_index.json); did you mean {tiny_sd_path}?")
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"not a checkpoint")
    assert main(["slider", "train", "--base", str(junk), "--out", str(tmp_path / "x.safetensors"), *common]) != 0
    assert "could not be loaded as a Stable Diffusion checkpoint" in one_line(capsys)

    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight": torch.zeros(4, 7),
               "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.up.weight": torch.zeros(7, 4)}, wrong)
    assert main(["slider", "sample", "--base", str(tiny_sd_path), "--lora", str(wrong), "--prompt", "x", "--steps", "2",
                 "--resolution", "64", "--out", str(tmp_path / "g.png"), "--device", "cpu", "--quiet"]) != 0
    assert "does not fit this base model" in one_line(capsys)

    # Files that are not there are named before the scoring models load (here: would fail to),
    # and an output folder that cannot be made before anything loads.
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tmp_path / "no-clip.pt"))
    for args, words in (
        (["train", "--base", str(tmp_path / "no-model"), "--out", str(tmp_path / "x.safetensors")],
         f"base checkpoint {tmp_path / 'no-model'} does not exist"),
        (["sample", "--base", str(tiny_sd_path), "--lora", str(tmp_path / "no.safetensors"), "--prompt", "x",
          "--out", str(tmp_path / "g.png")], f"LoRA {tmp_path / 'no.safetensors'} does not exist"),
        (["train", "--base", str(tiny_sd_path), "--scorer", str(tmp_path / "no-scorer.safetensors"),
          "--out", str(tmp_path / "x.safetensors")], "latent scorer"),
        (["train", "--base", str(tiny_sd_path), "--out", str(junk / "x.safetensors")], "is a file, not a folder"),
        (["train", "--base", str(tiny_sd_path), "--out", str(tmp_path / "x.safetensors"), "--kohya",
          str(junk / "k.safetensors")], "is a file, not a folder"),
    ):
        assert main(["slider", *args, "--device", "cpu", "--quiet"]) != 0
        assert words in one_line(capsys)
    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))

    if not torch.cuda.is_available():
        assert main(["slider", "train", "--base", str(tiny_sd_path), "--out", str(tmp_path / "x.safetensors"),
                     "--steps", "2", "--device", "cuda", "--quiet"]) != 0
        assert "CUDA" in one_line(capsys)

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the extra were not installed
    assert main(["slider", "train", "--base", str(tiny_sd_path), "--out", str(tmp_path / "x.safetensors"), *common]) != 0
    assert "uv sync --extra slider" in one_line(capsys)
    assert not json.dumps([str(p) for p in tmp_path.glob("x.*")]).count("x.safetensors")


def test_a_latent_scorer_distils_saves_and_steers_the_slider(tiny_sd_path, models, tmp_path):
    """The machinery, on a target a small network can learn. (das-ag's own score of the tiny random
    models' pictures is not predictable from their latents: held-out correlation 0.05-0.14 with 300
    samples, note/slider.md; on real weights that is the comparison to make.)"""
    from das_ag.slider.latent_scorer import collect, distil, load_scorer, save_scorer

    settings = SliderSettings(**{**FAST, "steps": 1})
    start, scores = collect(load_base(tiny_sd_path, torch.device("cpu")), models, settings, 60)
    assert start.shape == (60, 4, 32, 32) and scores.std() > 0  # das-ag's score of each decoded picture
    target = start[:, 0].mean((1, 2))  # a stand-in score a latent network can learn
    scorer, report = distil(start, target, epochs=150)
    assert report.validation_correlation > 0.7, report
    base = load_base(tiny_sd_path, torch.device("cpu"))
    path = save_scorer(tmp_path / "scorer.safetensors", scorer, {"base": base.identity()})
    again, meta = load_scorer(path, base)
    assert torch.equal(again(start[:4]), scorer(start[:4])) and meta["base"]["sha256"] == base.sha256

    train(base, models, SliderSettings(sign="reward", scorer=str(path), **FAST), tmp_path / "latent.safetensors")
    after, _ = collect(base, models, settings, 60)  # the same seeds, now through the LoRA
    assert scorer(after).mean() > scorer(start).mean()


def test_the_slider_can_reward_style_ambiguity_too(tiny_sd_path, models, tmp_path):
    base = load_base(tiny_sd_path, torch.device("cpu"))
    reports = []
    train(base, models, SliderSettings(sign="reward", ambiguity="reward", **{**FAST, "steps": 2}),
          tmp_path / "both.safetensors", on_step=reports.append)
    assert all("style_entropy" in r.parts for r in reports)
    with pytest.raises(Exception, match="latent scorer replaces"):
        train(load_base(tiny_sd_path, torch.device("cpu")), models,
              SliderSettings(ambiguity="reward", scorer="x.safetensors", **FAST), tmp_path / "no.safetensors")


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_clean_latent_is_read_from_each_kind_of_prediction(kind):
    """SD 1.x predicts the noise, SD 2.x-768 predicts v: the loop must read each right, or a v model
    would learn from a wrong picture. diffusers' own noising and velocity are the reference."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=kind)
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(2, 1, 4, 8, 8, generator=generator)
    for t in (980, 500, 20):
        timestep = torch.tensor([t])
        noisy = scheduler.add_noise(clean, noise, timestep)
        output = {"epsilon": noise, "sample": clean,
                  "v_prediction": scheduler.get_velocity(clean, noise, timestep)}[kind]
        assert torch.allclose(predicted_clean(scheduler, output, noisy, t), clean, atol=2e-4), t


def test_a_v_prediction_base_is_trained_towards_its_sign(tiny_sd_path, models, tmp_path):
    """The tiny model configured to predict v, as SD 2.x-768 does: trained with reward, its
    pictures at LoRA weight 1 score above those at weight 0. (On these random models the reward
    rises even if v were read as noise; the test above is the one that checks the reading.)"""
    import shutil

    v_path = tmp_path / "v-base"
    shutil.copytree(tiny_sd_path, v_path)
    config = json.loads((v_path / "scheduler/scheduler_config.json").read_text())
    (v_path / "scheduler/scheduler_config.json").write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    up = mean_scores(v_path, models, trained(v_path, models, tmp_path, "reward"), weights=(0.0, 1.0))
    assert up[1.0] > up[0.0], up


def test_an_inpainting_unet_is_refused_in_one_line(tiny_sd_path, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    conv = pipe.unet.conv_in
    pipe.unet.conv_in = torch.nn.Conv2d(9, conv.out_channels, conv.kernel_size, padding=conv.padding)
    pipe.unet.register_to_config(in_channels=9)  # latent + mask + masked picture, as SD inpainting models read
    pipe.save_pretrained(tmp_path / "inpainting")
    with pytest.raises(DasAgError, match="a UNet of 9 input channels .* text-to-image models of 4$"):
        load_base(tmp_path / "inpainting", torch.device("cpu"))


def test_gradient_checkpointing_does_not_change_the_lora(tiny_sd_path, models, tmp_path):
    settings = SliderSettings(sign="reward", **{**FAST, "steps": 3})
    plain = train(load_base(tiny_sd_path, torch.device("cpu")), models, settings, tmp_path / "plain.safetensors")
    recomputed = train(load_base(tiny_sd_path, torch.device("cpu")), models, settings, tmp_path / "ckpt.safetensors",
                       gradient_checkpointing=True)
    a, b = read_lora(plain)[0], read_lora(recomputed)[0]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert read_lora(plain)[1] == read_lora(recomputed)[1]  # the same recipe: a resumed run may switch it


def test_bf16_training_keeps_the_lora_in_float32_and_moves_the_score(tiny_sd_path, models, tmp_path, tiny_clip_path,
                                                                      head_path, monkeypatch):
    base = load_base(tiny_sd_path, torch.device("cpu"))
    lora = train(base, models, SliderSettings(sign="reward", precision="bf16", **FAST), tmp_path / "bf16.safetensors")
    assert base.precision == "bf16" and base.unet.conv_in.weight.dtype == torch.bfloat16
    assert {p.dtype for p in base.unet.parameters() if p.requires_grad} == {torch.float32}
    up = mean_scores(tiny_sd_path, models, lora, weights=(0.0, 1.0))
    assert up[1.0] > up[0.0], up

    monkeypatch.setenv("CLIP_MODEL_PATH", str(tiny_clip_path))
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))
    out = tmp_path / "cli.safetensors"
    assert main(["slider", "train", "--base", str(tiny_sd_path), "--steps", "2", "--resolution", "64",
                 "--inference-steps", "3", "--precision", "bf16", "--gradient-checkpointing", "--symmetric",
                 "--anchor-weight", "1", "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    settings = read_lora(out)[1]["settings"]
    assert (settings["precision"], settings["symmetric"], settings["anchor_weight"]) == ("bf16", True, 1.0)


def test_previews_show_the_lora_in_training_without_changing_it(tiny_sd_path, models, tmp_path):
    settings = SliderSettings(sign="reward", **{**FAST, "steps": 6})
    plain = train(load_base(tiny_sd_path, torch.device("cpu")), models, settings, tmp_path / "plain.safetensors")
    seen = []
    lora = train(load_base(tiny_sd_path, torch.device("cpu")), models, settings, tmp_path / "shown.safetensors",
                 preview_every=4, on_preview=seen.append)
    assert [p["step"] for p in seen] == [4, 6]  # every 4 steps, and after the last
    files = sorted(tmp_path.glob("shown.preview-*.png"))
    assert [f.name for f in files] == ["shown.preview-00004.png", "shown.preview-00006.png"]
    assert read_recipe(files[-1])["kind"] == "slider-preview"
    tensors, recipe = read_lora(lora)
    assert recipe["previews"] == seen
    assert all(torch.equal(tensors[k], read_lora(plain)[0][k]) for k in tensors)  # previews change nothing

    # The last preview is what `slider sample` shows of the saved LoRA for the same prompt and seeds.
    cells, _ = sample(load_base(tiny_sd_path, torch.device("cpu")), models, lora, [-1.0, 0.0, 1.0], PROMPTS[0], [0, 1],
                      steps=FAST["inference_steps"], resolution=FAST["resolution"])
    for weight, mean in recipe["previews"][-1]["aesthetic"].items():
        scores = [c.aesthetic for c in cells if c.weight == float(weight)]
        assert sum(scores) / len(scores) == pytest.approx(mean, abs=1e-5), weight


def test_running_out_of_memory_keeps_the_steps_done_and_says_how_to_go_on(tiny_sd_path, models, tmp_path):
    """A step that runs out of memory (raised here as the GPU raises it, from inside the loop) costs
    only itself: the steps before it are checkpointed, the message says what to change, and the
    run continues with gradient checkpointing to the LoRA of an uninterrupted run."""
    settings = SliderSettings(sign="reward", **{**FAST, "steps": 8, "checkpoint_every": 100})
    whole = train(load_base(tiny_sd_path, torch.device("cpu")), models, settings, tmp_path / "whole.safetensors")
    out = tmp_path / "oom.safetensors"

    def on_step(report):
        if report.step == 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(SliderOutOfMemory) as caught:
        train(load_base(tiny_sd_path, torch.device("cpu")), models, settings, out, on_step=on_step)
    message = str(caught.value)
    assert "\n" not in message and "at step 6" in message and "the 5 steps before it" in message
    assert "--gradient-checkpointing" in message and not out.exists()
    steps = []
    train(load_base(tiny_sd_path, torch.device("cpu")), models, settings, out, on_step=steps.append,
          gradient_checkpointing=True)
    assert [r.step for r in steps] == [6, 7, 8]
    a, b = read_lora(out)[0], read_lora(whole)[0]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_anchor_keeps_the_lora_near_the_base_model(tiny_sd_path, models, tmp_path):
    """DRaFT+'s anchor: trained with it, the LoRA's UNet outputs stay much nearer the base model's
    (measured on fresh latents and a training prompt) than trained without it."""
    def drift(anchor_weight: float) -> float:
        base = load_base(tiny_sd_path, torch.device("cpu"))
        train(base, models, SliderSettings(sign="reward", anchor_weight=anchor_weight, **FAST),
              tmp_path / f"anchor-{anchor_weight}.safetensors")
        latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(5))
        conditions = prompt_conditions(base.pipe, PROMPTS[0], 64)
        t = base.pipe.scheduler.timesteps[2]
        base.unet.eval()
        with torch.no_grad():
            with_lora = guided_prediction(base.unet, latents, t, conditions, 5.0)
            base.unet.disable_adapters()
            without = guided_prediction(base.unet, latents, t, conditions, 5.0)
        return float((with_lora - without).pow(2).mean())

    free, anchored = drift(0.0), drift(1.0)
    assert anchored < free / 5, (anchored, free)  # measured: 0.0007 against 0.029


def test_symmetric_training_moves_the_score_as_far_down_at_minus_one_as_up_at_one(tiny_sd_path, tiny_clip_path,
                                                                                   real_head_path, tmp_path):
    """Concept sliders' two-sided training. One-sided, the tiny models' -1 moved the score about half
    as far as +1 (0.0059 against 0.0107); trained at both ends, 0.0069 against 0.0072. Measured on
    LAION's head: on a random head of its size the two ends came out 0.0033 and 0.0016."""
    models = load_models(str(tiny_clip_path), str(real_head_path), "cpu")
    scores = mean_scores(tiny_sd_path, models, trained(tiny_sd_path, models, tmp_path, "reward", symmetric=True))
    up, down = scores[1.0] - scores[0.0], scores[0.0] - scores[-1.0]
    assert up > 0 and down > 0, scores
    assert min(up, down) / max(up, down) > 0.8, scores


def test_the_gradient_can_run_back_through_several_unet_calls(tiny_sd_path, models, tmp_path):
    """DRaFT-K with K = 3: the loss reaches the LoRA through three UNet calls and the sampler's
    steps between them, and training still moves the score its way. K above the schedule is refused."""
    scores = mean_scores(tiny_sd_path, models, trained(tiny_sd_path, models, tmp_path, "reward", grad_steps=3),
                         weights=(0.0, 1.0))
    assert scores[1.0] > scores[0.0], scores
    assert "grad steps must be at most the inference steps (6)" in SliderSettings(grad_steps=7, inference_steps=6).problems()[0]


def test_a_prompt_longer_than_the_text_encoder_reads_is_noted_once(tiny_sd_path, tiny_clip_path, head_path, tmp_path):
    """The text encoder cuts a prompt at 77 tokens, in training as in sampling. das-ag says so in
    one line before training, instead of the libraries' warnings at each new prompt, through the
    progress bar. Run as a user runs it, in a process of its own: pytest's capture does not see
    what the libraries log to the stderr they found at import."""
    import os
    import subprocess

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red house\n" + "a very long prompt about a blue boat on a lake " * 3 + "\n")
    env = {**os.environ, "CLIP_MODEL_PATH": str(tiny_clip_path), "AESTHETIC_PREDICTOR_PATH": str(head_path)}
    done = subprocess.run([sys.executable, "-m", "das_ag.cli", "slider", "train", "--base", str(tiny_sd_path),
                           "--prompts", str(prompts), "--steps", "4", "--inference-steps", "2", "--resolution", "64",
                           "--out", str(tmp_path / "x.safetensors"), "--device", "cpu", "--quiet", "--preview-every",
                           "0"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and "1 of the 2 prompts are longer than the text encoder's 77 tokens" in lines[0], lines
