"""das-ag on the command line: generate, compare, batch, report, recipe, centroids, slider, download, app.

The CLI only translates flags into a GenerationConfig and events into a progress bar; every
decision about images lives in the engine. Anything a user can get wrong ends in one line on
stderr and a non-zero exit, never a traceback. The slider's commands live in slider/commands.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path

from . import __version__
from .config import PRESETS, GenerationConfig
from .durable import check_writable
from .errors import DasAgError, first_line
from .flags import (DEVICE_HELP, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Parser, finite_float, nonnegative_int,
                    positive_int, say, seed_list, whole_number)
from .schedules import SCHEDULE_KINDS, Schedule
from .settings import described, flag_of, replace_settings, values_from_arguments
from .studio.files import MAX_UPLOAD_MB


def _size(text: str) -> tuple[int, int]:
    """"640x384" -> (640, 384): width by height, in pixels."""
    width, sep, height = text.lower().replace(" ", "").partition("x")
    try:
        if not sep:
            raise ValueError
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 640x384, got {text!r}") from None


def _add_prompt_arguments(group) -> None:
    group.add_argument("--prompt", action="append", default=[], metavar="TEXT[:WEIGHT]",
                       help="a prompt to steer towards (repeatable); a negative WEIGHT repels; WEIGHT may be a "
                            "timeline over the run, KIND:START:END[:RATE] (\"a red sky:linear:1:0\")")
    group.add_argument("--negative", action="append", default=[], metavar="TEXT[:WEIGHT]",
                       help="a prompt to steer away from (repeatable)")


def _add_settings_arguments(parser, *, skip: tuple[str, ...] = ()) -> None:
    """A flag for every setting of GenerationConfig (settings.py describes them), of every
    canvas and term with settings of its own, plus the aesthetic weight's short forms and the preset."""
    from .canvases import CANVASES
    from .objectives import TERMS
    from .settings import add_arguments

    add_arguments(parser, GenerationConfig, skip=skip)
    for name, canvas in CANVASES.items():  # --strokes, --segments, ... (or --<canvas>-<setting>)
        if canvas.Settings is not None:
            add_arguments(parser, canvas.Settings, prefix=f"{name}_")
    for name, term in TERMS.items():  # terms with settings of their own: --<term>-<setting>
        if term.Settings is not None:
            add_arguments(parser, term.Settings, prefix=f"{name}_", skip=skip)
    shape = next(g for g in parser._action_groups if g.title == "optimisation")
    shape.add_argument("--size", type=_size, metavar="WxH",
                       help="an image of any aspect ratio, e.g. 640x384 (instead of --resolution's square)")
    what = next(g for g in parser._action_groups if g.title == "guidance")
    what.add_argument("--aesthetic-weight", dest="aesthetic_weight_end", type=finite_float, metavar="W",
                      help="the aesthetic weight the schedule reaches")
    what.add_argument("--aesthetic-start", type=finite_float, metavar="W", help="the aesthetic weight at step 0")
    what.add_argument("--aesthetic-schedule", choices=SCHEDULE_KINDS, help="the aesthetic schedule's form")
    what.add_argument("--preset", choices=list(PRESETS),
                      help="paper: the published settings; quick: a fast look; fast-cpu: ViT-B/32 guides and "
                           "ViT-L/14 scores every 10th step (minutes, not an hour, on a laptop CPU); sketch: a black line sketch "
                           "(strokes, CLIPasso-like); clipdraw: a colour drawing of many strokes (CLIPDraw-like)")


def _method_list(text: str) -> list[str]:
    from .experiments import parse_method

    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected method names separated by commas")
    for name in names:
        try:
            parse_method(name)
        except DasAgError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _images_per_step(text: str) -> int | None:
    if text == "auto":
        return None
    return positive_int(text)


def _nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, not {text}")
    return value


def _add_model_arguments(parser, *, batches: bool = False):
    models = parser.add_argument_group("models and output")
    if batches:
        models.add_argument("--images-per-step", type=_images_per_step, default=None, metavar="N|auto",
                            help="images that share each encoder step (default auto: as many as fit in memory); "
                                 "DAS, DAS-AG and DAS-rAG of a seed run together")
        cluster = parser.add_argument_group("a Ray cluster (the cluster extra)")
        cluster.add_argument("--ray", metavar="auto|ADDRESS",
                             help="make the images on a Ray cluster: auto joins the one `ray start` runs here, else "
                                  "starts a local one; an address (HOST:6379, ray://HOST:10001) joins that cluster")
        cluster.add_argument("--gpus-per-worker", type=_nonnegative_float, metavar="G",
                             help="each worker's share of a GPU, e.g. 0.5 for two per GPU (default 1 where the cluster "
                                  "has GPUs and the plan's device allows; 0: CPU workers)")
        cluster.add_argument("--cpus-per-worker", type=positive_int, metavar="N",
                             help="CPUs each CPU worker takes and its torch threads (default: this machine's torch "
                                  "threads, so that images match a local run here byte for byte)")
    models.add_argument("--clip-model", action="append", metavar="NAME|PATH|open_clip:ARCH@TAG[:WEIGHT]",
                        help="the CLIP to use (default: $CLIP_MODEL_PATH, else ViT-L/14); repeat it for an ensemble, "
                             "each with a weight (0: only for the aesthetic head)")
    models.add_argument("--aesthetic-model", metavar="PATH", help="default: $AESTHETIC_PREDICTOR_PATH, else the download")
    models.add_argument("--quiet", action="store_true", help="no progress bar")
    return models


def _is_ensemble(sources: list[str] | None) -> bool:
    """Whether --clip-model asks for more than the one CLIP a recipe records as its model: several,
    a weight, or an open_clip model (which the config then carries, so --from-png re-creates it)."""
    from .clip_models import parse_encoder

    specs = [parse_encoder(s) for s in sources or ()]
    return len(specs) > 1 or any(s.weight != 1 or s.is_open_clip for s in specs)


def run_model_sources(args: argparse.Namespace, configs) -> tuple:
    """(CLIP source(s), head source, whether the head is needed) for `configs`: their ensemble,
    or the one CLIP of --clip-model; the head is required unless every config leaves the
    aesthetic term out (guidance off)."""
    ensembles = {c.clip_models for c in configs}
    if len(ensembles) > 1:
        raise DasAgError("the images of one command must use the same CLIP models")
    ensemble = ensembles.pop()
    single = args.clip_model[0] if args.clip_model and not ensemble else None
    return ensemble or single, args.aesthetic_model, any(c.guidance != "off" for c in configs)


def load_run_models(args: argparse.Namespace, configs, device: str):
    """The models `configs` run on (run_model_sources)."""
    from .models import load_models

    clip, head, need_head = run_model_sources(args, configs)
    return load_models(clip, head, device, need_head=need_head)


def build_parser() -> argparse.ArgumentParser:
    from .cpu_routes import KNOWN_SHAPES

    parser = Parser(prog="das-ag", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"das-ag {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    gen = commands.add_parser("generate", help="make one image from text")
    what = gen.add_argument_group("what to make")
    _add_prompt_arguments(what)
    what.add_argument("--from-png", metavar="FILE.png", help="start from the recipe in a das-ag PNG; other flags override it")
    what.add_argument("--from-svg", dest="from_png", metavar="FILE.svg",
                      help="start from the recipe in a das-ag SVG (a strokes drawing); other flags override it")
    _add_settings_arguments(gen)
    models = _add_model_arguments(gen)
    models.add_argument("--out", metavar="FILE.png", help="default: outputs/<prompt>-<method>-seed<S>.png")
    models.add_argument("--animation", metavar="FILE.gif|.webp|.mp4", help="also save the image forming, as an animation")
    models.add_argument("--animation-every", type=positive_int, metavar="N",
                        help="a frame every N steps (default: about 50 frames in all)")
    models.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    gen.set_defaults(run=cmd_generate)

    anim = commands.add_parser("animate", help="a video that moves: frames that each start from the last one, "
                                               "zoomed, panned and turned (resumable)")
    what = anim.add_argument_group("what to make")
    _add_prompt_arguments(what)
    what.add_argument("--from-png", metavar="FILE.png",
                      help="start from the recipe in a das-ag PNG (a frame of an animation brings its whole "
                           "animation); other flags override it")
    _add_settings_arguments(anim)
    from .animate import Motion
    from .settings import add_arguments

    add_arguments(anim, Motion)
    models = _add_model_arguments(anim)
    models.add_argument("--out", required=True, metavar="FILE.mp4|.gif|.webp",
                        help="the video; its frames go in FILE-frames/ beside it, and the same command goes on from them")
    anim.set_defaults(run=cmd_animate)

    compare = commands.add_parser("compare", help="DAS vs DAS-AG vs DAS-rAG with identical settings and seeds")
    what = compare.add_argument_group("what to make")
    _add_prompt_arguments(what)
    what.add_argument("--prompts", choices=["reference"], dest="prompt_source",
                      help="reference: the four published prompts with the shared negative prompt")
    what.add_argument("--seeds", type=seed_list, default=[0], metavar="0,1,2", help="default: 0")
    what.add_argument("--methods", type=_method_list, default=None, metavar="DAS,DAS-AG,...",
                      help="default DAS,DAS-AG,DAS-rAG; a mark adds a signed term: DAS-CAN (style ambiguity "
                           "rewarded), DAS-AG-CAN, DAS-rCAN ...")
    _add_settings_arguments(compare, skip=("aesthetic_guidance", "seed"))
    models = _add_model_arguments(compare, batches=True)
    models.add_argument("--out", required=True, metavar="DIR", help="folder for the images, tables, chart and sheet")
    models.add_argument("--evaluate", action="append", default=[], metavar="NAME",
                        help="an extra, held-out evaluator: aesthetic-v2.5 (opt-in, AGPL-3.0)")
    compare.set_defaults(run=cmd_compare)

    batch = commands.add_parser("batch", help="run a plan of prompts x seeds x methods x variants (resumable)")
    batch.add_argument("plan", metavar="PLAN.toml", help="the plan (see the README's Batch plans); the same command resumes it")
    batch.add_argument("--out", metavar="DIR", help="default: the plan's `out`, else a folder named after it")
    _add_model_arguments(batch, batches=True)
    batch.set_defaults(run=cmd_batch)

    report = commands.add_parser("report", help="rebuild the tables, chart and contact sheet from a folder of PNGs")
    report.add_argument("folder", metavar="DIR", help="a compare or batch folder, or any folder of das-ag PNGs")
    report.add_argument("--evaluate", action="append", default=[], metavar="NAME",
                        help="an extra, held-out evaluator: aesthetic-v2.5 (opt-in, AGPL-3.0)")
    report.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]", help=DEVICE_HELP)
    report.set_defaults(run=cmd_report)

    recipe = commands.add_parser("recipe", help="print the recipe embedded in a das-ag PNG or SVG, or a slider LoRA")
    recipe.add_argument("png", metavar="FILE.png|FILE.svg|LORA.safetensors", help="a file das-ag wrote")
    recipe.set_defaults(run=cmd_recipe)

    centroids = commands.add_parser("centroids", help="style centroids of your own pictures, for --centroids")
    centroid_commands = centroids.add_subparsers(dest="centroids_command", required=True, parser_class=Parser)
    build = centroid_commands.add_parser("build", help="embed every picture in a folder and cluster them into k styles")
    build.add_argument("folder", metavar="DIR", help="your pictures (PNG, JPEG, WebP, BMP, GIF or TIFF; subfolders too)")
    build.add_argument("--k", type=whole_number(2, "2 or more"), default=5, help="number of styles (default 5)")
    build.add_argument("--out", required=True, metavar="FILE.npz", help="the centroids, for --centroids")
    build.add_argument("--seed", type=nonnegative_int, default=0, help="the k-means seed (default 0)")
    build.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="pictures per encoder batch")
    build.add_argument("--clip-model", metavar="NAME|PATH", help="default: $CLIP_MODEL_PATH, else ViT-L/14")
    build.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]", help=DEVICE_HELP)
    build.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(run=cmd_centroids_build)

    from .slider.commands import add_commands as add_slider_commands

    add_slider_commands(commands)

    app = commands.add_parser("app", help="open the studio in the browser (Streamlit)")
    app.add_argument("streamlit_args", nargs=argparse.REMAINDER, help="passed on to `streamlit run`")
    app.set_defaults(run=cmd_app)

    download = commands.add_parser("download", help="fetch and verify the CLIP and aesthetic weights")
    download.add_argument("--clip-model", metavar="NAME", help="default: $CLIP_MODEL_PATH, else ViT-L/14")
    download.set_defaults(run=cmd_download)

    bench = commands.add_parser("bench-cpu", help="measure this CPU's fastest way to run the encoder again "
                                                  "(runs on the CPU choose by it, cached per CPU, torch and shape)")
    bench.add_argument("--shape", default="ViT-L/14", choices=list(KNOWN_SHAPES), help="the encoder's shape (default ViT-L/14)")
    bench.add_argument("--views", type=int, default=8, metavar="N",
                       help="views a step (copies x images a step; default 8, das-ag's copies)")
    bench.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "both"),
                       help="the precision to measure (default auto: what a run here takes)")
    bench.set_defaults(run=cmd_bench_cpu)
    return parser


# -- generate ---------------------------------------------------------------------------------
def config_from_args(args: argparse.Namespace) -> GenerationConfig:
    from .png import config_from_png

    prompts = prompts_from_args(args)
    if args.from_png:
        config = config_from_png(args.from_png)
        if args.preset:
            config = _preset_config(args, config.prompts)
        if prompts:
            config = config.replace(prompts=prompts)
    else:
        config = _preset_config(args, prompts)
    return apply_settings(config, args)


def _preset_config(args: argparse.Namespace, prompts: tuple) -> GenerationConfig:
    """The --preset's settings (or the defaults) with `prompts`; left unchecked until the flags
    are applied (a preset's prompt-less config may become valid with --clip-weight 0)."""
    return GenerationConfig(**{**PRESETS.get(args.preset or "", {}), "prompts": prompts}, check=False)


def _need_attracting_prompt(prompts: tuple, message: str) -> None:
    if not any(not p.is_negative for p in prompts):
        raise DasAgError(message)


def prompts_from_args(args: argparse.Namespace) -> tuple:
    """The prompts of --prompt and --negative, in that order."""
    from .prompts import parse_prompt

    return tuple(parse_prompt(p) for p in args.prompt) + tuple(parse_prompt(n, negative=True) for n in args.negative)


def apply_settings(config: GenerationConfig, args: argparse.Namespace) -> GenerationConfig:
    """`config` with every settings flag the user gave applied on top."""
    from .objectives import TERMS

    changes = values_from_arguments(args, GenerationConfig)
    if _is_ensemble(getattr(args, "clip_model", None)):
        changes["clip_models"] = tuple(args.clip_model)
    if getattr(args, "size", None) is not None:
        changes["width"], changes["height"] = args.size
    elif "resolution" in changes:  # --resolution alone asks for a square
        changes["width"] = changes["height"] = None
    canvas_settings = _canvas_settings_from_args(args, config, changes.get("canvas", config.canvas))
    if canvas_settings is not config.canvas_settings:
        changes["canvas_settings"] = canvas_settings
    terms = dict(config.terms)
    for name, term in TERMS.items():
        if term.Settings is not None:
            given = values_from_arguments(args, term.Settings, prefix=f"{name}_")
            if given:
                terms[name] = replace_settings(config.term_settings(name), given)
    if terms != dict(config.terms):
        changes["terms"] = terms
    aesthetic = _aesthetic_short_forms(args, terms.get("aesthetic") or config.term_settings("aesthetic"))
    if aesthetic != config.term_settings("aesthetic"):
        changes["terms"] = {**terms, "aesthetic": aesthetic}
    return GenerationConfig(**{**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}, **changes})


def _aesthetic_short_forms(args: argparse.Namespace, settings):
    """The aesthetic term's settings with --aesthetic-weight, --aesthetic-start and
    --aesthetic-schedule applied to its weight's schedule."""
    weight = settings.weight
    if args.aesthetic_schedule is not None:
        weight = Schedule(args.aesthetic_schedule, weight.start, weight.end, weight.rate)
    if args.aesthetic_weight_end is not None:
        if args.aesthetic_weight_end < 0:
            raise DasAgError("--aesthetic-weight must be >= 0; use --guidance penalty to push the score down")
        start = args.aesthetic_weight_end if weight.kind == "constant" else weight.start
        weight = Schedule(weight.kind, start, args.aesthetic_weight_end, weight.rate)
    if args.aesthetic_start is not None:
        weight = Schedule(weight.kind, args.aesthetic_start, weight.end, weight.rate)
    return replace_settings(settings, {"weight": weight}) if weight != settings.weight else settings


def _canvas_settings_from_args(args: argparse.Namespace, config: GenerationConfig, canvas: str):
    """The canvas settings after the flags: those of `config` (when it keeps its canvas) with the
    given flags applied; a flag of a canvas the run does not use is a mistake worth a line."""
    from .canvases import CANVASES

    settings = config.canvas_settings if canvas == config.canvas else None
    if isinstance(settings, dict):
        from .config import canvas_settings_from_dict

        settings = canvas_settings_from_dict(canvas, settings)
    for name, cls in CANVASES.items():
        if cls.Settings is None:
            continue
        given = values_from_arguments(args, cls.Settings, prefix=f"{name}_")
        if not given:
            continue
        if name != canvas:
            f, s = next((f, s) for f, s in described(cls.Settings) if f.name in given)
            raise DasAgError(f"{flag_of(f, s, f'{name}_')} is a setting of the {name} canvas; add --canvas {name}")
        settings = replace_settings(settings if settings is not None else cls.Settings(), given)
    return settings


def _warn_of_unread_flags(args: argparse.Namespace, config: GenerationConfig) -> None:
    """A line for each flag given that the run will not read: a top-level setting its canvas
    ignores (the pixel --lr for strokes), or a canvas's or term's own setting that its other
    settings leave unread (--init-strength without --init-image)."""
    from .canvases import canvas_class
    from .objectives import TERMS

    cls = canvas_class(config.canvas)
    for name, reason in cls.ignores.items():
        if getattr(args, name, None) is not None:
            print(f"das-ag: warning: --{name.replace('_', '-')} has no effect on the {config.canvas} canvas: {reason}",
                  file=sys.stderr)
    parts = [(config.canvas, cls.Settings, config.canvas_settings)]
    parts += [(name, term.Settings, config.term_settings(name)) for name, term in TERMS.items() if term.Settings is not None]
    for prefix, settings_class, settings in parts:
        if settings_class is None:
            continue
        given, unused = values_from_arguments(args, settings_class, prefix=f"{prefix}_"), settings.unused()
        for f, s in described(settings_class):
            why = unused.get(f.name)
            if why and f.name in given:
                print(f"das-ag: warning: {flag_of(f, s, f'{prefix}_')} has no effect: {why}", file=sys.stderr)

def progress_text(event) -> str:
    """The progress bar's numbers: the loss and each term's metrics, whatever terms the run has."""
    from .objectives import term_class

    parts = [f"loss={event.loss:.4f}"]
    for name, metrics in event.metrics.items():
        cls = term_class(name)
        if cls is not None and metrics:
            parts.append(cls.progress(metrics))
    return " ".join(p for p in parts if p)


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import determinism
    from .engine import synthesize
    from .models import resolve_device
    from .png import batch_from_recipe, next_free_path, read_recipe, recorded_route
    from .rescue import save_or_rescue

    config = config_from_args(args)
    batch, index, route = (config,), 0, None
    if args.from_png:
        recipe = read_recipe(args.from_png)
        recipe_batch, recipe_index = batch_from_recipe(recipe)
        if recipe_batch[recipe_index] == config:
            # Made together with other images: the same bytes need the same batch, and the CPU
            # route its run took (a changed config is a new run: it takes this CPU's own route).
            batch, index, route = recipe_batch, recipe_index, recorded_route(recipe)
    out = Path(args.out) if args.out else next_free_path(config)
    if out.suffix.lower() != ".png":
        raise DasAgError(f"--out {out} must end in .png")
    if out.exists() and not args.overwrite:
        raise DasAgError(f"{out} already exists; pass --overwrite or choose another --out")
    check_writable(out)
    _warn_of_unread_flags(args, config)
    if args.animation:
        from .animation import FORMATS, check_format

        animation = Path(args.animation)
        if animation.suffix.lower() not in FORMATS:
            raise DasAgError(f"--animation {animation} must end in {', '.join(FORMATS)}")
        check_format(animation.suffix)  # an .mp4 without PyAV: said now, not after the run
        if animation.exists() and not args.overwrite:
            raise DasAgError(f"{animation} already exists; pass --overwrite or choose another --animation")
        check_writable(animation)
    device = resolve_device(config.device)
    say(args, f"loading models on {device} ...")
    models = load_run_models(args, batch, config.device)
    if len(models.encoders) > 1:
        for encoder in models.encoders:
            mib = sum(p.numel() * p.element_size() for p in encoder.model.parameters()) / 2**20
            role = f"weight {encoder.weight:g}" if encoder.weight > 0 else "the aesthetic head only"
            say(args, f"  {encoder.identity.name}: {role}, {encoder.width}-d, {mib:.0f} MiB of weights")
    every = (args.animation_every or max(1, config.steps // 50)) if args.animation else 0
    run = synthesize(batch, models, preview_every=every, cpu_route=route)
    frames = [run.preview(index)] if args.animation else []
    for warning in run.warnings:
        print(f"das-ag: warning: {warning}", file=sys.stderr)
    together = f", re-made with the {len(batch) - 1} other image(s) of its batch" if len(batch) > 1 else ""
    size = f"{config.width}x{config.height}" if config.width is not None else f"{config.resolution}"
    say(args, f"{config.method}: {config.steps} steps at {size} px, seed {config.seed}, "
              f"{determinism.mode(device, config.deterministic)}{together}")
    if run.compiled:
        say(args, "compiling the step: the first one waits for the compiler (about a minute the first time on "
                  "this machine, seconds once cached); --no-compile runs uncompiled")
    interrupted = False
    with tqdm(total=config.steps, unit="step", disable=args.quiet, leave=False, file=sys.stderr) as bar:
        try:
            for event in run:
                bar.set_postfix_str(progress_text(event.images[index]), refresh=False)
                bar.update(1)
                if args.animation and event.images[index].preview is not None:
                    frames.append(event.images[index].preview)
        except KeyboardInterrupt:
            interrupted = True  # keep what was made: the image so far is saved below
            run.stop()
    result = run.result(index)
    # A disk that filled up during the run must not lose the image: it is kept elsewhere, and said.
    path, trouble = save_or_rescue(lambda p: result.save(p, overwrite=args.overwrite), out, "the image")
    troubles = [trouble] if trouble else []
    if args.animation:
        from .animation import save_animation

        if frames[-1].tobytes() != result.image.tobytes():
            frames.append(result.image)  # stopped between frames: end on the saved image
        saved, trouble = save_or_rescue(lambda p: save_animation(frames, p, overwrite=args.overwrite), args.animation,
                                        "the animation")
        troubles += [trouble] if trouble else []
        print(f"saved {saved} ({len(frames)} frames)")
    print(f"saved {path}  {config.method}  {result.steps_done} steps  {result.elapsed:.1f} s  "
          f"{result.scores.summary()}" + (f"  (aesthetic at start {result.initial_scores.aesthetic:.3f})"
                                          if result.initial_scores.aesthetic is not None else ""))
    if result.status in ("non_finite", "failed"):
        troubles.append(result.message)
    for trouble in troubles:
        print(f"das-ag: error: {trouble}", file=sys.stderr)
    if troubles:
        return EXIT_FAILED
    return EXIT_INTERRUPTED if interrupted else 0


def cmd_animate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .animate import Motion, animate, animation_from_recipe, check, frames_folder
    from .animation import check_format
    from .png import read_recipe

    motion = Motion()
    if args.from_png:
        found = animation_from_recipe(read_recipe(args.from_png))
        if found is not None:  # a frame: its whole animation, not the one frame's settings
            config, motion = found
            args.from_png = None
            config = apply_settings(config.replace(prompts=prompts_from_args(args) or config.prompts), args)
        else:
            config = config_from_args(args)
    else:
        config = config_from_args(args)
    motion = replace_settings(motion, values_from_arguments(args, Motion))
    check(config, motion)
    out = Path(args.out)
    check_format(out.suffix)
    folder = frames_folder(out)
    if out.exists() and not folder.exists():
        raise DasAgError(f"{out} already exists and has no frames folder to go on from; choose another --out")
    check_writable(folder / "frame.png")
    _warn_of_unread_flags(args, config)
    say(args, f"loading models on {config.device} ...")
    models = load_run_models(args, [config], config.device)
    say(args, f"{config.method}: {motion.frames} frames, the first of {config.steps} steps, then "
              f"{motion.frame_steps} each; frames in {folder}")
    made = []
    with tqdm(total=motion.frames, unit="frame", disable=args.quiet, leave=False, file=sys.stderr) as bar:
        def on_step(frame, event):
            bar.set_postfix_str(f"frame {frame} step {event.step}/{event.steps} " + progress_text(event.images[0]),
                                refresh=False)

        def on_frame(done):
            bar.update(1)
            if not done.resumed:
                made.append(done.seconds)

        paths = animate(config, motion, models, out, on_step=on_step, on_frame=on_frame)
    resumed = len(paths) - len(made)
    # Seconds a frame: the first frame runs --steps steps, so it is counted apart.
    later = made[1:] if resumed == 0 else made
    timing = f", {sum(later) / len(later):.2f} s a frame" if later else ""
    if resumed == 0 and made:
        timing += f" after a first frame of {made[0]:.1f} s"
    print(f"saved {out}  {len(paths)} frames at {motion.fps:g} fps"
          + (f" ({resumed} found in {folder})" if resumed else "") + timing)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from . import reference
    from .experiments import build_plan, slug

    if args.prompt_source == "reference":
        if args.prompt or args.negative:
            raise DasAgError("--prompts reference brings its own prompts; drop --prompt and --negative")
        prompt_sets = reference.prompt_sets()
    else:
        prompts = prompts_from_args(args)
        _need_attracting_prompt(prompts, "give at least one --prompt to steer towards, or --prompts reference")
        prompt_sets = [(slug(prompts[0].text), prompts)]
    settings = apply_settings(_preset_config(args, prompt_sets[0][1]), args)
    base = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in ("prompts", "seed")}
    published = reference.PUBLISHED if args.prompt_source == "reference" else None
    plan = build_plan(prompt_sets, args.seeds, base, Path(args.out), evaluators=tuple(args.evaluate), published=published,
                      **({"methods": tuple(args.methods)} if args.methods else {}))
    return _run_plan(plan, args)


def cmd_batch(args: argparse.Namespace) -> int:
    from .experiments import load_plan

    return _run_plan(load_plan(args.plan, args.out), args)


def _run_plan(plan, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluators import optional_evaluator
    from .models import resolve_device
    from .report import write_report

    device = plan.items[0].config.device
    # Evaluators first: a missing one should cost a message, not an hour of images.
    evaluators = [optional_evaluator(name, str(resolve_device(device))) for name in plan.evaluators]
    failed = 0
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(plan.items), unit="image", disable=args.quiet, file=sys.stderr))

        def on_item(item, status):
            bar.set_postfix_str(f"{item.filename} {status}")
            bar.update(1)

        try:
            if args.ray:
                made, skipped, failed = _run_plan_on_ray(plan, args, bar, stack)
            else:
                _no_cluster_flags(args)
                models = load_run_models(args, [item.config for item in plan.items], device)
                say(args, f"{len(plan.items)} {'videos' if plan.items[0].motion else 'images'} into {plan.out_dir}")
                from .experiments import run_plan

                made, skipped = run_plan(plan, models, on_item=on_item, images_per_step=args.images_per_step)
        except KeyboardInterrupt:
            bar.close()
            print(f"das-ag: interrupted; finished images are kept in {plan.image_dir}; "
                  "run the same command again to continue", file=sys.stderr)
            return EXIT_INTERRUPTED
    paths = write_report(plan.out_dir, evaluators)
    print(f"made {made}, skipped {skipped} already finished" + (f", {failed} failed" if failed else "")
          + f"; tables in {plan.out_dir}, sheet {paths['contact_sheet']}")
    print(paths["summary_md"].read_text().split("\n\n")[0])
    return EXIT_FAILED if failed else 0


def _no_cluster_flags(args: argparse.Namespace) -> None:
    for flag in ("gpus_per_worker", "cpus_per_worker"):
        if getattr(args, flag, None) is not None:
            raise DasAgError(f"--{flag.replace('_', '-')} places workers on a Ray cluster; add --ray auto (or an address)")


def _run_plan_on_ray(plan, args: argparse.Namespace, bar, stack: contextlib.ExitStack) -> tuple[int, int, int]:
    """The plan on the cluster of --ray: one bar (done, running, failed, workers), a line for each failure."""
    from . import cluster

    cluster.check_plan(plan)
    configs = [item.config for item in plan.items]
    clip, head, need_head = run_model_sources(args, configs)
    if cluster.connect(args.ray):
        stack.callback(cluster.require_ray().shutdown)
    spec = cluster.WorkerSpec(clip, head, need_head, *_worker_share(args, plan.items[0].config.device))
    say(args, f"{len(plan.items)} images into {plan.out_dir}, on the Ray cluster ({spec.asks()})")

    def on_item(item, status):
        bar.update(1)

    def on_failure(line):
        bar.write(f"das-ag: {line}", file=sys.stderr)

    return cluster.run_plan_on_ray(plan, spec, images_per_step=args.images_per_step, on_item=on_item,
                                   on_progress=lambda p: bar.set_postfix_str(str(p)), on_failure=on_failure)


def _worker_share(args: argparse.Namespace, device: str) -> tuple[float, int]:
    """(GPUs, CPUs) per worker from the flags, the plan's device and the cluster's resources."""
    import ray
    import torch

    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    gpus = args.gpus_per_worker
    if device == "cpu" and gpus:
        raise DasAgError("--gpus-per-worker asks for GPUs but the plan runs on --device cpu")
    if device.startswith("cuda") and device != "cuda":
        raise DasAgError(f"on a Ray cluster each worker uses the GPU Ray gives it: use --device cuda, not {device}")
    if gpus is None:
        gpus = 1.0 if has_gpus and device != "cpu" else 0.0
    if device == "cuda" and not gpus:
        raise DasAgError("the plan asks for --device cuda but " + ("the Ray cluster has no GPUs" if not has_gpus
                                                                  else "--gpus-per-worker is 0"))
    if gpus:
        return gpus, args.cpus_per_worker or 1
    return 0.0, args.cpus_per_worker or torch.get_num_threads()


def cmd_report(args: argparse.Namespace) -> int:
    from .evaluators import optional_evaluator
    from .models import resolve_device
    from .report import write_report

    folder = Path(args.folder)
    if not folder.is_dir():
        raise DasAgError(f"{folder} is not a folder")
    evaluators = [optional_evaluator(name, str(resolve_device(args.device))) for name in args.evaluate]
    paths = write_report(folder, evaluators)
    print(paths["summary_md"].read_text().split("\n\n")[0])
    return 0


def cmd_centroids_build(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .models import load_models, resolve_device
    from .styles import build_centroids, embed_folder, picture_files
    from .weights import cache_dir

    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise DasAgError(f"--out {out} must end in .npz")
    if out.exists() and not args.overwrite:
        raise DasAgError(f"{out} already exists; pass --overwrite or choose another --out")
    check_writable(out)
    picture_files(args.folder)  # a folder that is not there, before CLIP loads
    device = resolve_device(args.device)
    say(args, f"loading CLIP on {device} ...")
    models = load_models(args.clip_model, None, args.device, need_head=False)
    start = time.perf_counter()
    with tqdm(unit="picture", disable=args.quiet, leave=False, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        points, hashes, report = embed_folder(args.folder, models, cache_dir=cache_dir(), batch_size=args.batch_size,
                                              progress=progress)
    centroids = build_centroids(points, hashes, args.k, models.identities()["clip"], seed=args.seed)
    centroids.save(out, overwrite=args.overwrite)
    rate = f", {report.embedded / report.seconds:.2f} pictures/s" if report.embedded and report.seconds else ""
    print(f"saved {out}: k={centroids.k} styles of {centroids.images} pictures (sizes {centroids.sizes}), "
          f"inertia {centroids.inertia:.3f}; encoded {report.embedded}{rate}, {report.cached} from the cache, "
          f"{time.perf_counter() - start:.1f} s")
    if report.skipped:
        print(f"das-ag: warning: skipped {len(report.skipped)} file(s) that are not readable pictures, "
              f"e.g. {report.skipped[0]}", file=sys.stderr)
    return 0


def cmd_recipe(args: argparse.Namespace) -> int:
    from .png import read_recipe

    if Path(args.png).suffix.lower() == ".safetensors":  # a slider LoRA keeps its recipe in its metadata
        from .slider.lora import read_lora

        recipe = read_lora(args.png)[1]
        if not recipe:
            raise DasAgError(f"{args.png} holds no das-ag recipe (a LoRA from elsewhere?)")
    else:
        recipe = read_recipe(args.png)
    print(json.dumps(recipe, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


# What the project's .streamlit/config.toml sets, for `das-ag app` started from any folder: this
# machine only, no usage statistics, small uploads, no source watcher. A flag the user passes wins.
STUDIO_SERVER_DEFAULTS = {
    "--server.address": "localhost",
    "--browser.gatherUsageStats": "false",
    "--server.maxUploadSize": str(MAX_UPLOAD_MB),
    "--server.fileWatcherType": "none",
    "--runner.postScriptGC": "false",
    "--client.toolbarMode": "viewer",
    "--client.showErrorDetails": "none",
}


def cmd_app(args: argparse.Namespace) -> int:
    import os

    app_path = Path(__file__).with_name("app.py")
    given = {a.split("=", 1)[0] for a in args.streamlit_args}
    defaults = [x for flag, value in STUDIO_SERVER_DEFAULTS.items() if flag not in given for x in (flag, value)]
    argv = [sys.executable, "-m", "streamlit", "run", str(app_path), *defaults, *args.streamlit_args]
    os.execv(sys.executable, argv)  # the studio replaces this process; Ctrl-C stops it
    return 0  # not reached


def cmd_download(args: argparse.Namespace) -> int:
    from . import weights

    clip_path = weights.resolve_clip(args.clip_model)
    print(f"CLIP: {clip_path} (sha256 {weights.verified_sha256(clip_path)[:16]}...)")
    head_path = weights.resolve_aesthetic()
    print(f"aesthetic head: {head_path} (sha256 {weights.verified_sha256(head_path)[:16]}...)")
    return 0


def cmd_bench_cpu(args: argparse.Namespace) -> int:
    import torch

    from .cpu_routes import KNOWN_SHAPES, OUTRUN, chosen_route, cpu_model, last_figures
    from .engine import resolve_dtype
    from .errors import ConfigError

    if not 1 <= args.views <= 1024:
        raise ConfigError("--views must be from 1 to 1024")
    names = ("float32", "bfloat16") if args.dtype == "both" else (resolve_dtype(args.dtype, torch.device("cpu")),)
    shape = KNOWN_SHAPES[args.shape]
    print(f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads: {args.shape}, "
          f"{args.views} views a step")
    for name in names:
        route = chosen_route(shape, getattr(torch, name), args.views, again=True)
        seconds = last_figures()
        blocks = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in seconds["block"].items())
        attention = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in seconds["attention"].items())
        outrun = f"; run once, over {OUTRUN:g}x the quickest: {', '.join(seconds['outrun'])}" if seconds["outrun"] else ""
        print(f"  {name}: {route}  (ms: a block by linears {blocks}; its attention {attention}{outrun})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .weights import load_environment

    load_environment()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["app"] and argv[1:2] not in (["-h"], ["--help"]):
        # Everything after `app` belongs to `streamlit run` (argparse would take --server.* as ours).
        return cmd_app(argparse.Namespace(streamlit_args=argv[1:]))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse has said its line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.run(args)
    except DasAgError as exc:
        print(f"das-ag: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("das-ag: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # the machine's answer (a file gone, no permission, a full disk), not a bug of ours
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"das-ag: error: {exc.strerror or first_line(exc)}{where}", file=sys.stderr)
        return EXIT_FAILED
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not isinstance(exc, MemoryError) and type(exc).__name__ != "OutOfMemoryError":
            raise
        # A run's steps keep their image (the engine catches their errors); this is loading and the rest.
        print(f"das-ag: error: ran out of memory ({first_line(exc, 120)}); free memory on the device, or ask for "
              "less (a smaller resolution, fewer copies, --images-per-step 1)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
