"""`das-ag slider train | sample | scorer | export`: the slider's command line. cli.py adds these
commands to its parser; like the rest of this package, they import diffusers only when they run
(`require_extra` says in one line what to install where it is missing)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..durable import check_writable, write_atomic
from ..errors import DasAgError
from ..flags import (DEVICE_HELP, EXIT_FAILED, EXIT_INTERRUPTED, Parser, finite_float, float_list, nonnegative_int, positive_int, say,
                     seed_list, whole_number)
from . import existing

SLIDER_RESOLUTION_HELP = "the pictures' side (default: the base model's own: 512 for SD 1.x, 768 for SD 2.x-768, 1024 for SDXL)"


def add_model_arguments(parser) -> None:
    parser.add_argument("--config", metavar="DIR", help="for a single-file --base of a family das-ag has no "
                        "configs for (it has SD 1.x's, 2.x's and SDXL base's): a local diffusers folder of that family")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help=DEVICE_HELP)
    parser.add_argument("--prediction-type", choices=["auto", "epsilon", "v_prediction"], default="auto",
                        help="what the UNet predicts (auto: its config says; an SD 2.x single file is taken for v)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="of the Stable Diffusion and CLIP models (auto: bf16 on a GPU that has it, else fp32)")
    parser.add_argument("--clip-model", metavar="NAME|PATH", help="default: $CLIP_MODEL_PATH, else ViT-L/14")
    parser.add_argument("--aesthetic-model", metavar="PATH", help="default: $AESTHETIC_PREDICTOR_PATH, else the download")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(commands) -> None:
    """The `slider` command and its four subcommands, on the CLI's subparsers `commands`."""
    slider = commands.add_parser("slider", help="train and use an aesthetic slider LoRA for Stable Diffusion (extra: slider)")
    slider_commands = slider.add_subparsers(dest="slider_command", required=True, parser_class=Parser)
    train = slider_commands.add_parser("train", help="train a LoRA that raises (or lowers) the aesthetic score")
    train.add_argument("--base", required=True, metavar="PATH", help="a local Stable Diffusion checkpoint: a diffusers folder, or one .safetensors or .ckpt file")
    train.add_argument("--sign", choices=["reward", "penalty"], default="reward", help="raise (reward) or lower (penalty) the score")
    train.add_argument("--steps", type=positive_int, default=500, metavar="N",
                       help="training steps, one sampled picture and one update each (default %(default)s)")
    train.add_argument("--lr", type=finite_float, default=1e-4, metavar="X", help="the LoRA's AdamW learning rate (default %(default)g)")
    train.add_argument("--rank", type=positive_int, default=4, metavar="N", help="the LoRA's rank (default %(default)s)")
    train.add_argument("--alpha", type=finite_float, default=4.0, metavar="X",
                       help="the LoRA's alpha; its update is scaled by alpha / rank (default %(default)g)")
    train.add_argument("--resolution", type=positive_int, default=None, metavar="PX", help=SLIDER_RESOLUTION_HELP)
    train.add_argument("--inference-steps", type=whole_number(2, "2 or more"), default=26, metavar="N",
                       help="the sampler's schedule; each step denoises part of it and learns at its end (default %(default)s)")
    train.add_argument("--grad-steps", type=positive_int, default=1, metavar="K",
                       help="differentiate through the last K UNet calls (DRaFT-K); K x the activations' memory")
    train.add_argument("--guidance-scale", type=finite_float, default=5.0, metavar="X",
                       help="classifier-free guidance while sampling (default %(default)g)")
    train.add_argument("--aesthetic-weight", type=finite_float, default=1.0, metavar="X",
                       help="the aesthetic score's weight in the reward; its sign comes from --sign (default %(default)g)")
    train.add_argument("--clip-weight", type=finite_float, default=0.0, metavar="X",
                       help="CLIP similarity to the prompt, to stay on-prompt (default %(default)g: off)")
    train.add_argument("--anchor-weight", type=finite_float, default=0.0, metavar="X",
                       help="keep the LoRA's predictions near the base model's (DRaFT+), against reward hacking "
                            "(default %(default)g: off)")
    train.add_argument("--symmetric", action="store_true",
                       help="also train the LoRA at weight -1 to move the score the other way (twice the time per step)")
    train.add_argument("--ambiguity", choices=["reward", "penalty", "off"], default="off",
                       help="add the style-ambiguity term (see Creativity) to the reward")
    train.add_argument("--ambiguity-weight", type=finite_float, default=0.25, metavar="X", help="its weight (default %(default)g)")
    train.add_argument("--styles", default="wikiart", metavar="wikiart|FILE.txt",
                       help="the styles --ambiguity spreads over: the built-in WikiArt list or a file, one per line")
    train.add_argument("--prompts", metavar="FILE.txt", help="training prompts, one per line (default: a built-in general list)")
    train.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                       help="seeds the LoRA's start and each step's prompt and noise (default %(default)s)")
    train.add_argument("--checkpoint-every", type=positive_int, default=50, metavar="N",
                       help="keep a checkpoint every N steps; the same command again resumes from it (default %(default)s)")
    train.add_argument("--scorer", metavar="SCORER.safetensors",
                       help="train against a latent scorer (das-ag slider scorer) instead of the image-space score")
    train.add_argument("--kohya", metavar="FILE.safetensors", help="also write the LoRA in kohya's format (ComfyUI, A1111)")
    train.add_argument("--preview-every", type=whole_number(0, "0 (off) or more"), default=100, metavar="N",
                       help="every N steps and at the end, a scored grid of the LoRA at -1/0/+1 beside --out (0: none)")
    train.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute the UNet's and VAE's activations in the backward: less memory, slower steps")
    train.add_argument("--out", required=True, metavar="FILE.safetensors",
                       help="the LoRA (diffusers' format, its recipe inside)")
    add_model_arguments(train)
    train.set_defaults(run=cmd_train)

    sample = slider_commands.add_parser("sample", help="a grid of images at several LoRA weights, each scored")
    sample.add_argument("--base", required=True, metavar="PATH", help="the Stable Diffusion checkpoint the LoRA was trained on")
    sample.add_argument("--lora", required=True, metavar="FILE.safetensors", help="a LoRA from das-ag slider train")
    sample.add_argument("--weights", type=float_list, default=[-1.0, 0.0, 1.0], metavar="W,W,...",
                        help="LoRA weights, the grid's columns (default -1,0,1; write --weights=-1,0,1 when the first is negative)")
    sample.add_argument("--prompt", required=True, help="what to draw")
    sample.add_argument("--seeds", type=seed_list, default=[0], metavar="0,1", help="the grid's rows, one seed each (default 0)")
    sample.add_argument("--steps", type=whole_number(2, "2 or more"), default=26, metavar="N", help="sampler steps (default %(default)s)")
    sample.add_argument("--guidance-scale", type=finite_float, default=5.0, metavar="X",
                        help="classifier-free guidance (default %(default)g)")
    sample.add_argument("--resolution", type=positive_int, default=None, metavar="PX", help=SLIDER_RESOLUTION_HELP)
    sample.add_argument("--out", required=True, metavar="GRID.png", help="the grid; the single images go beside it")
    add_model_arguments(sample)
    sample.set_defaults(run=cmd_sample)

    scorer = slider_commands.add_parser("scorer", help="distil das-ag's image score into a small network on latents")
    scorer.add_argument("--base", required=True, metavar="PATH", help="the Stable Diffusion checkpoint to train against")
    scorer.add_argument("--samples", type=whole_number(10, "10 or more"), default=512, metavar="N",
                        help="latents to learn from (default %(default)s)")
    scorer.add_argument("--epochs", type=positive_int, default=200, metavar="N", help="passes over them (default %(default)s)")
    scorer.add_argument("--resolution", type=positive_int, default=None, metavar="PX", help=SLIDER_RESOLUTION_HELP)
    scorer.add_argument("--inference-steps", type=whole_number(2, "2 or more"), default=26, metavar="N",
                        help="the sampler's schedule, as slider train's (default %(default)s)")
    scorer.add_argument("--prompts", metavar="FILE.txt", help="prompts, one per line (default: a built-in general list)")
    scorer.add_argument("--seed", type=nonnegative_int, default=0, metavar="S", help="seeds the samples and the network (default %(default)s)")
    scorer.add_argument("--out", required=True, metavar="SCORER.safetensors", help="the scorer, for slider train --scorer")
    add_model_arguments(scorer)
    scorer.set_defaults(run=cmd_scorer)

    export = slider_commands.add_parser("export", help="write a slider LoRA in kohya's format (ComfyUI, A1111)")
    export.add_argument("lora", metavar="FILE.safetensors", help="a LoRA from das-ag slider train")
    export.add_argument("--kohya", required=True, metavar="OUT.safetensors", help="where to write kohya's format")
    export.set_defaults(run=cmd_export)


def load_slider_models(args: argparse.Namespace):
    """The slider's extra, the base checkpoint and das-ag's models, each with a one-line failure."""
    from ..models import load_models, resolve_device
    from . import require_extra

    require_extra()
    from .base import PRECISIONS, load_base, resolve_precision

    # Files named on the command line, before CLIP loads (or is downloaded) and the base loads.
    existing(args.base, "base checkpoint", folder_ok=True)
    for what, path in (("LoRA", getattr(args, "lora", None)), ("latent scorer", getattr(args, "scorer", None))):
        if path:
            existing(path, what)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    say(args, f"loading {args.base} and the scoring models on {device} in {precision} ...")
    models = load_models(args.clip_model, args.aesthetic_model, args.device)
    base = load_base(args.base, device, PRECISIONS[precision], config=args.config,
                     prediction_type=None if args.prediction_type == "auto" else args.prediction_type)
    if base.note:
        print(f"das-ag: note: {base.note}", file=sys.stderr)
    return base, models


def note_long_prompts(base, prompts) -> None:
    """One line for the prompts the base model's text encoder cuts short (as it does when sampling)."""
    from .denoise import long_prompts

    cut = long_prompts(base.pipe, prompts)
    if cut:
        limit = base.pipe.tokenizer.model_max_length
        which = "the prompt is" if len(prompts) == 1 else f"{len(cut)} of the {len(prompts)} prompts are"
        print(f"das-ag: note: {which} longer than the text encoder's {limit} tokens, so the end is cut, as when "
              f"sampling (first: {cut[0][:50]!r}...)", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise DasAgError(f"--out {out} must end in .safetensors")
    from . import require_extra

    require_extra()
    from .lora import export_kohya
    from .train import GENERAL_PROMPTS, SliderSettings, SliderStopped, load_prompts, train

    settings = SliderSettings(
        sign=args.sign, steps=args.steps, lr=args.lr, rank=args.rank, alpha=args.alpha, resolution=args.resolution,
        inference_steps=args.inference_steps, grad_steps=args.grad_steps, guidance_scale=args.guidance_scale,
        aesthetic_weight=args.aesthetic_weight,
        clip_weight=args.clip_weight, anchor_weight=args.anchor_weight, symmetric=args.symmetric,
        ambiguity=args.ambiguity, ambiguity_weight=args.ambiguity_weight, styles=args.styles,
        prompts=load_prompts(args.prompts) if args.prompts else GENERAL_PROMPTS,
        seed=args.seed, checkpoint_every=args.checkpoint_every, scorer=args.scorer or "",
    )
    problems = settings.problems()
    if problems:
        raise DasAgError(problems[0])
    for path in (out, *([Path(args.kohya)] if args.kohya else [])):
        check_writable(path)  # before the models load and the hours of training
    base, models = load_slider_models(args)
    settings = dataclasses.replace(settings, precision=base.precision).for_base(base)
    note_long_prompts(base, settings.prompts)
    with tqdm(total=settings.steps, unit="step", disable=args.quiet, leave=False, file=sys.stderr) as bar:
        def on_step(report) -> None:
            bar.n = report.step
            anchor = f" anchor={report.parts['anchor']:.2e}" if "anchor" in report.parts else ""
            bar.set_postfix_str(f"reward={report.reward:+.4f} aes={report.parts['aesthetic']:.3f}{anchor}", refresh=False)
            bar.refresh()

        try:
            def on_preview(preview) -> None:
                scores = ", ".join(f"{w}: {v:.3f}" for w, v in preview["aesthetic"].items())
                if not args.quiet:
                    bar.write(f"step {preview['step']}: {preview['file']} (aesthetic by LoRA weight {scores})",
                              file=sys.stderr)

            path = train(base, models, settings, out, on_step=on_step, gradient_checkpointing=args.gradient_checkpointing,
                         preview_every=args.preview_every, on_preview=on_preview)
        except SliderStopped as stopped:
            bar.close()
            print(f"das-ag: {stopped}", file=sys.stderr)
            return EXIT_INTERRUPTED
    print(f"saved {path} ({settings.sign}, {settings.steps} steps, rank {settings.rank})")
    if args.kohya:
        print(f"saved {export_kohya(path, args.kohya)} (kohya format)")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from ..png import encode_png
    from ..rescue import save_or_rescue

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise DasAgError(f"--out {out} must end in .png")
    check_writable(out)
    base, models = load_slider_models(args)
    note_long_prompts(base, [args.prompt])
    from .sample import grid, grid_recipe, sample

    resolution = args.resolution or base.native_resolution
    cells, lora_recipe = sample(base, models, args.lora, args.weights, args.prompt, args.seeds, steps=args.steps,
                                guidance_scale=args.guidance_scale, resolution=resolution)
    recipe = grid_recipe(base, models, args.lora, lora_recipe, cells, args.prompt, weights=args.weights, seeds=args.seeds,
                         steps=args.steps, guidance_scale=args.guidance_scale, resolution=resolution,
                         precision=base.precision)

    def write(path: Path) -> Path:
        write_atomic(path, encode_png(grid(cells, args.weights, args.seeds), recipe), overwrite=True)
        for cell in cells:
            single = path.with_name(f"{path.stem}-seed{cell.seed}-w{cell.weight:+g}.png")
            write_atomic(single, encode_png(cell.image, {**recipe, "cell": {"seed": cell.seed, "weight": cell.weight,
                                                                            "aesthetic": cell.aesthetic}}), overwrite=True)
        return path

    saved, trouble = save_or_rescue(write, out, "the grid and its images")
    print(f"saved {saved} and {len(cells)} images beside it")
    for weight in args.weights:
        scores = [c.aesthetic for c in cells if c.weight == weight]
        print(f"  LoRA weight {weight:+g}: aesthetic {sum(scores) / len(scores):.3f} (mean of {len(scores)})")
    if trouble:
        print(f"das-ag: error: {trouble}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_scorer(args: argparse.Namespace) -> int:
    import time

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise DasAgError(f"--out {out} must end in .safetensors")
    from ..rescue import save_or_rescue

    check_writable(out)
    base, models = load_slider_models(args)
    from .latent_scorer import collect, distil, save_scorer
    from .train import GENERAL_PROMPTS, SliderSettings, load_prompts

    settings = SliderSettings(resolution=args.resolution, inference_steps=args.inference_steps, seed=args.seed,
                              prompts=load_prompts(args.prompts) if args.prompts else GENERAL_PROMPTS,
                              precision=base.precision).for_base(base)
    problems = settings.problems()
    if problems:
        raise DasAgError(problems[0])
    start = time.perf_counter()
    latents, scores = collect(base, models, settings, args.samples)
    made = time.perf_counter() - start
    scorer, report = distil(latents, scores, epochs=args.epochs, seed=args.seed)
    recipe = {"base": base.identity(), "models": models.identities(), "samples": args.samples,
              "resolution": settings.resolution, "precision": base.precision,
              "validation_correlation": report.validation_correlation, "validation_mse": report.validation_mse}
    saved, trouble = save_or_rescue(lambda path: save_scorer(path, scorer, recipe), out, "the scorer")
    print(f"saved {saved}: {report.samples} latents ({made:.1f} s to make and score), held-out correlation "
          f"{report.validation_correlation:.3f}, mse {report.validation_mse:.4f} (scores' spread {report.target_std:.4f})")
    if trouble:
        print(f"das-ag: error: {trouble}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import require_extra

    require_extra()
    from .lora import export_kohya

    print(f"saved {export_kohya(args.lora, args.kohya)} (kohya format)")
    return 0
