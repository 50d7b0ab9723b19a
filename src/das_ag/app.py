"""das-ag studio: write prompts, choose the aesthetic guidance, watch the image form, save it.

    uv run streamlit run src/das_ag/app.py      (or: uv run das-ag app)

This page only lays out controls and shows what a Job reports; settings are translated by
das_ag.studio.form, runs happen in das_ag.studio.jobs, images are made by the engine.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from pathlib import Path

import pandas as pd
import streamlit as st
import torch
from PIL import Image

from das_ag import determinism, weights
from das_ag.animation import encode_animation
from das_ag.canvases import CANVASES
from das_ag.canvases.base import unused_settings
from das_ag.config import METHOD_ORDER, PRESETS, GenerationConfig, default_margin
from das_ag.errors import ConfigError, DasAgError, WeightsError
from das_ag.objectives import TERMS, score_description, term_class
from das_ag.durable import write_atomic
from das_ag.png import next_free_path, read_recipe, recorded_route
from das_ag.prompts import Prompt
from das_ag.schedules import SCHEDULE_KINDS
from das_ag.settings import PICTURE_SUFFIXES, Setting, described, kind_of
from das_ag.studio import form, limits
from das_ag.studio.files import MAX_UPLOAD_MB, output_folder, outside_uploads, output_root, save_upload
from das_ag.animate import Motion
from das_ag.studio.jobs import Job, VideoJob, series, small

GUIDANCE_LABELS = {"reward": "reward (DAS-AG)", "penalty": "penalty (DAS-rAG)", "off": "off (DAS)"}
COMPILE_LABELS = {"auto": "auto: on a GPU, not on the CPU", "on": "on", "off": "off"}
POLL_SECONDS = 1.5  # the live panel redraws this often; each redraw competes with the run for the CPU
UNCLAIMED = "unclaimed"  # under the output root: the images of runs whose page was closed before they ended
VIDEOS = "videos"  # under the output root: the studio's videos, each with its frames folder beside it
# A run's thread gives up the interpreter lock in every torch op and must take it back from the
# page's threads: at Python's default 5 ms switch interval it waited so often that the studio made
# 0.85x the CLI's steps/s; at 1 ms it matches the CLI (bench/studio_speed.py).
sys.setswitchinterval(0.001)


# -- state ------------------------------------------------------------------------------------
@st.cache_resource
def launch_cublas_setting() -> str | None:
    """CUBLAS_WORKSPACE_CONFIG as it was when the server started (das-ag may set it later)."""
    return os.environ.get(determinism.CUBLAS_ENV)


def default_state() -> dict:
    state = form.config_to_state(GenerationConfig(prompts=(Prompt("placeholder"),)))
    state.update(form.prompts_to_state(()))  # one empty prompt row to type into
    state.update(form.motion_to_state(Motion()))
    return state


def init_state() -> None:
    ss = st.session_state
    if "initialised" in ss:
        return
    ss.update(default_state())
    ss.update(
        initialised=True,
        row_counter=10,
        preset="default",
        preview_every=5,
        output_subfolder="",
        gallery=[],
        last_items=[],
        compare_mode=False,
        video_mode=False,
        video_format=".gif",
        variations=1,
        job=None,
        recorded_job=None,
        notice=None,
    )


def clear_prompt_rows() -> None:
    ss = st.session_state
    for key in [k for k in ss.keys() if k.startswith(("pos_text_", "pos_weight_", "neg_text_", "neg_weight_"))]:
        del ss[key]


def apply_settings(config: GenerationConfig, *, with_prompts: bool) -> None:
    state = form.config_to_state(config)
    if with_prompts:
        clear_prompt_rows()
    else:
        state = {k: v for k, v in state.items() if not k.startswith(("pos_", "neg_"))}
    st.session_state.update(state)


# -- callbacks (run before the next rerun draws the widgets) ------------------------------------
def on_preset() -> None:
    name = st.session_state["preset"]
    apply_settings(GenerationConfig(prompts=(Prompt("placeholder"),), **PRESETS.get(name, {})), with_prompts=False)
    st.session_state["notice"] = ("info", f"Applied the {name} settings; your prompts are unchanged.")


def on_restore() -> None:
    upload = st.session_state.get("restore_png")
    if upload is None:
        return
    if upload.size > MAX_UPLOAD_MB * 2**20:  # the server's own limit also applies; say it in words
        st.session_state["notice"] = ("error", f"{upload.name} is over {MAX_UPLOAD_MB} MB; a das-ag PNG is far smaller.")
        return
    try:
        recipe = read_recipe(upload.getvalue())
        foreign = form.foreign_files(form.recipe_term_state(recipe))
        if foreign:  # refused before its settings are made: making them reads their files
            raise DasAgError(foreign[0])
        config = GenerationConfig.from_dict(recipe["config"])
        route = recorded_route(recipe)
    except DasAgError as exc:
        st.session_state["notice"] = ("error", f"Could not restore from {upload.name}: {exc}")
        return
    apply_settings(config, with_prompts=True)
    # Generate re-runs it with the CPU route its run took, for the same bytes; only while the
    # form still makes exactly that config (a changed setting is a new run, on this CPU's route).
    st.session_state["restored_run"] = (config, route)
    st.session_state["preset"] = "default"
    st.session_state["notice"] = ("success", f"Restored every setting from {upload.name}. Press Generate to re-run it.")


def add_row(group: str) -> None:
    ss = st.session_state
    ss["row_counter"] += 1
    row = ss["row_counter"]
    ss[f"{group}_rows"] = [*ss[f"{group}_rows"], row]
    ss.update(form.prompt_row_state(group, row))


def remove_row(group: str, row: int) -> None:
    ss = st.session_state
    ss[f"{group}_rows"] = [r for r in ss[f"{group}_rows"] if r != row]


def start_job() -> None:
    # Read the settings now, not when the button was drawn: inputs committed since then (a value
    # typed just before the click) are in the session state only by the time callbacks run.
    running = st.session_state.get("job")
    if running is not None and running.snapshot().active:
        # The button is disabled while a run is on, but a second request can still arrive (two
        # clicks, a crafted message): it would replace the run, which could then not be stopped.
        st.session_state["notice"] = ("error", "This page's run is still going: stop it or wait for it first.")
        return
    config, problems = form.state_to_config(dict(st.session_state))
    if problems:
        st.session_state["notice"] = ("error", " ".join(problems))
        return
    # Variations: the next seeds. Compare: DAS, DAS-AG and DAS-rAG with every other setting, the
    # seed included, identical. All of them share each step's encoder batch.
    if st.session_state["video_mode"]:
        start_video(config)
        return
    seeds = [config.seed + k for k in range(int(st.session_state["variations"]))]
    methods = METHOD_ORDER if st.session_state["compare_mode"] else (config.guidance,)
    configs = [config.replace(seed=seed).with_guidance(g) for seed in seeds for g in methods]
    restored, route = st.session_state.get("restored_run") or (None, None)
    route = route if configs == [restored] else None
    try:
        too_large, grace = limits.work_problem(configs), limits.abandon_after()
    except ConfigError as exc:  # the operator's setting, not the visitor's: the log says which
        st.session_state["notice"] = ("error", f"This server's limits are misconfigured: {exc}")
        return
    if too_large:
        st.session_state["notice"] = ("error", too_large)
        return
    st.session_state["job"] = Job(configs, preview_every=int(st.session_state["preview_every"]),
                                  downloads=limits.downloads(), owner_alive=page_alive(), abandon_after=grace,
                                  abandoned_folder=output_root() / UNCLAIMED, cpu_route=route).start()
    st.session_state["notice"] = None


def start_video(config: GenerationConfig) -> None:
    """A video that moves, from the form's settings and its Video section (animate.py)."""
    from das_ag.animate import check

    motion, problems = form.motion_from_state(dict(st.session_state))
    try:
        if not problems:
            check(config, motion)
    except DasAgError as exc:
        problems = [form.sentence(str(exc))]
    if problems:
        st.session_state["notice"] = ("error", " ".join(problems))
        return
    # The whole video's steps count against the server's limit, as one image of that many steps.
    steps = config.steps + (motion.frames - 1) * motion.frame_steps
    try:
        too_large = limits.work_problem([config], steps=steps)
        grace = limits.abandon_after()
    except ConfigError as exc:
        st.session_state["notice"] = ("error", f"This server's limits are misconfigured: {exc}")
        return
    if too_large:
        st.session_state["notice"] = ("error", too_large)
        return
    suffix = st.session_state["video_format"]
    if suffix not in video_formats():
        st.session_state["notice"] = ("error", f"This server cannot write {suffix} videos; choose "
                                               f"{' or '.join(video_formats())}.")
        return
    out = next_free_path(config, output_root() / VIDEOS).with_suffix(suffix)
    while out.exists() or out.with_name(out.stem + "-frames").exists():  # a new video, never another's frames
        out = out.with_name(out.stem + "-1" + suffix)
    st.session_state["job"] = VideoJob(config, motion, out, preview_every=int(st.session_state["preview_every"]),
                                       downloads=limits.downloads(), owner_alive=page_alive(), abandon_after=grace,
                                       abandoned_folder=output_root() / UNCLAIMED).start()
    st.session_state["notice"] = None


def video_controls() -> None:
    """The Video section: frames, steps a frame, the camera's moves (numbers or schedules over
    the frames) and the frame rate."""
    with st.expander("Video: frames that each start from the last one, seen by a moving camera", expanded=True):
        st.caption("Frame 1 runs the steps above; each later frame starts from the last one, zoomed, panned and "
                   "turned, and runs its own steps. Prompts with a timeline follow it across the frames.")
        scalars = [(f, s) for f, s in described(Motion) if kind_of(f) != "schedule"]
        cols = st.columns(len(scalars) + 1)
        for col, (f, s) in zip(cols, scalars):
            with col:
                setting_control(form.VIDEO + f.name, f, s)
        cols[-1].selectbox("Format", video_formats(), key="video_format", format_func=lambda x: x[1:].upper(),
                           help="GIF plays everywhere; WebP is smaller; MP4 needs PyAV on the server (the `video` extra)")
        for f, s in described(Motion):
            if kind_of(f) == "schedule":
                schedule_controls(f.name, prefix=form.VIDEO + f.name, described_as=s)


def video_formats() -> list[str]:
    """The video formats this server can write: MP4 only where PyAV is installed."""
    from das_ag.animation import FORMATS, check_format

    formats = []
    for suffix in FORMATS:
        try:
            check_format(suffix)
            formats.append(suffix)
        except DasAgError:
            pass
    return formats


def page_alive():
    """Whether this page's browser is still connected, asked from the job's thread; None outside
    a Streamlit server (AppTest), where no page can go away."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return None
    runtime, session = Runtime.instance(), ctx.session_id
    return lambda: runtime.is_active_session(session)


def stop_job() -> None:
    job = st.session_state.get("job")
    if job is not None:
        job.stop()


def download_weights() -> None:
    source = weights.clip_source()
    if source not in limits.downloads() and not Path(source).expanduser().is_file():
        st.session_state["notice"] = ("error", f"This server does not download {source} for visitors; "
                                               "its operator can run `das-ag download`.")
        return
    try:
        weights.resolve_clip()
        weights.resolve_aesthetic()
        st.session_state["notice"] = ("success", "Weights downloaded and verified.")
    except WeightsError as exc:
        st.session_state["notice"] = ("error", str(exc))


def save_latest() -> None:
    """Save every image of the last job (one, or the three of a comparison) into the output folder."""
    saved = []
    try:
        folder = output_folder(st.session_state["output_subfolder"])
    except DasAgError as exc:
        st.session_state["notice"] = ("error", f"Could not save: {exc}")
        return
    for item in st.session_state["last_items"]:
        if item["saved"]:
            continue
        try:
            path = next_free_path(item["config"], folder)
            for suffix, data in item["files"].items():  # the PNG, and any file of the canvas beside it
                write_atomic(path.with_suffix(suffix), data)
        except (DasAgError, OSError) as exc:
            st.session_state["notice"] = ("error", f"Could not save: {exc}")
            return
        item["saved"] = str(path)
        saved.append(str(path))
    st.session_state["notice"] = ("success", "Saved " + ", ".join(saved))


# -- layout pieces ----------------------------------------------------------------------------
def device_options() -> list[str]:
    options = ["auto", "cpu"]
    if torch.cuda.is_available():
        options += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return options


def keep_valid(key: str, options: list[str], fallback: str) -> str | None:
    """Reset a choice that this machine cannot offer (say, a recipe made on a GPU); say so."""
    if st.session_state.get(key) in options:
        return None
    old = st.session_state.get(key)
    st.session_state[key] = fallback
    return f"{key} {old!r} is not available here; using {fallback!r}."


def prompt_rows(group: str, label: str) -> None:
    ss = st.session_state
    for i, row in enumerate(ss[f"{group}_rows"]):
        text_col, weight_col, timeline_col, end_col, remove_col = st.columns([5, 1.2, 1.4, 1.2, 0.6],
                                                                             vertical_alignment="bottom")
        text_col.text_input(
            f"{label} {i + 1}", key=form.prompt_key(group, row, "text"),
            placeholder="a lighthouse on a cliff at dawn, golden light" if group == "pos" else "blurry, dull, low quality",
        )
        weight_col.number_input(
            "Strength" if group == "neg" else "Weight", key=form.prompt_key(group, row, "weight"),
            min_value=0.0, max_value=100.0, step=0.1, format="%.2f",
            help=f"weight of {label.lower()} {i + 1} (at the first step, with a timeline)",
        )
        # A timeline moves the weight over the run: one prompt fading out while another fades in
        # moves the picture from one to the other.
        timeline_col.selectbox("Timeline", SCHEDULE_KINDS, key=form.prompt_key(group, row, "timeline"),
                               help="constant: the weight throughout; another kind moves it to the end weight over the run")
        constant = ss.get(form.prompt_key(group, row, "timeline")) == "constant"
        end_col.number_input("End weight", key=form.prompt_key(group, row, "end"), min_value=0.0, max_value=100.0,
                             step=0.1, format="%.2f", disabled=constant,
                             help="a constant weight has no end" if constant else "the weight at the end of the run")
        if group == "neg" or len(ss[f"{group}_rows"]) > 1:
            remove_col.button("✕", key=f"remove_{group}_{row}", on_click=remove_row, args=(group, row), help=f"remove {label.lower()} {i + 1}")


def schedule_controls(name: str, *, disabled_reason: str | None = None, prefix: str | None = None,
                      described_as: Setting | None = None, narrow: bool = False, end_above: bool = False) -> None:
    """A described schedule (settings.py) as four widgets: its kind, start, end and rate, in a
    row (or, `narrow`, as in the sidebar, two rows of two). `name` is a GenerationConfig field, or
    with `prefix` (the widgets' state keys) and `described_as`, a schedule of a canvas's or term's
    settings; `end_above`: its end has a widget of its own above (one widget per setting)."""
    ss = st.session_state
    prefix = prefix or name
    s = described_as or setting_of(name)
    kind = ss[form.schedule_key(prefix, "kind")]
    label, lowest, limit = s.label_for(name), float(s.minimum or 0.0), float(s.maximum) if s.maximum is not None else None
    cols = [*st.columns(2), *st.columns(2)] if narrow else st.columns(4)
    cols[0].selectbox(f"{label} schedule", SCHEDULE_KINDS, key=form.schedule_key(prefix, "kind"),
                      disabled=disabled_reason is not None, help=disabled_reason or s.help)
    cols[1].number_input("start", key=form.schedule_key(prefix, "start"), min_value=lowest, max_value=limit, step=0.05,
                         disabled=disabled_reason is not None, help=disabled_reason or f"{label} at the first step")
    if end_above:
        cols[2].caption(f"end: the {label} above")
    else:
        no_end = disabled_reason or ("a constant schedule has no end value" if kind == "constant" else None)
        cols[2].number_input("end", key=form.schedule_key(prefix, "end"), min_value=lowest, max_value=limit, step=0.05,
                             disabled=no_end is not None, help=no_end or f"{label} the schedule moves towards")
    no_rate = disabled_reason or (None if kind in form.RATE_KINDS else "only exponential schedules use a rate")
    cols[3].number_input("rate", key=form.schedule_key(prefix, "rate"), min_value=0.0001, max_value=0.9999, step=0.01,
                         format="%.4f", disabled=no_rate is not None, help=no_rate or "how fast the exponential moves")


def sidebar(on_cpu: bool) -> list[str]:
    """Settings beyond the prompt and guidance. Returns notes about choices reset for this machine."""
    notes = []
    ss = st.session_state
    with st.sidebar:
        st.header("Settings")
        st.selectbox("Preset", ["default", *PRESETS], key="preset", on_change=on_preset,
                     help="paper: the published DAS-AG settings; quick: a fast look; default: the app's defaults")
        st.file_uploader("Restore from a das-ag PNG or SVG", type=["png", "svg"], key="restore_png", on_change=on_restore,
                         help="drop an image or drawing made by das-ag to restore every control from its recipe")
        st.text_input("Output folder", key="output_subfolder", placeholder="(the output root itself)",
                      help=f"a folder inside {output_root()}, where Save PNG writes; the server's DAS_AG_OUTPUT_DIR "
                      "sets that root, and the page cannot write outside it")

        st.subheader("Optimisation")
        setting_controls("optimisation", disabled=CANVASES[ss["canvas"]].ignores)
        aspect_control()
        st.number_input("Seed", key="seed", min_value=0, max_value=2**31 - 1)
        st.number_input("Preview every (steps)", key="preview_every", min_value=1, max_value=1000)

        st.subheader("Canvas")
        st.selectbox("Canvas", list(CANVASES), key="canvas", format_func=lambda c: CANVASES[c].title or c,
                     help="what the run optimises: pixels, or Bézier strokes (saved as an SVG beside the PNG)")
        if CANVASES[ss["canvas"]].Settings is not None:  # each canvas shows its own settings, and only those
            canvas_controls(ss["canvas"])
        setting_controls("canvas")  # what every canvas takes: a seamless tile
        st.checkbox("Automatic jitter margin (short side / 14)", key="jitter_margin_auto")
        if ss["jitter_margin_auto"]:  # show the margin the run will use, not the last one typed
            try:
                ss["jitter_margin"] = default_margin(min(form.aspect_size(int(ss.get("resolution") or 224), ss["aspect"])))
            except (KeyError, ValueError):
                pass
        st.number_input("Jitter margin (px)", key="jitter_margin", min_value=0, max_value=int(setting_of("jitter_margin").maximum),
                        disabled=ss["jitter_margin_auto"],
                        help="turn off the automatic margin to set it" if ss["jitter_margin_auto"] else setting_of("jitter_margin").help)
        st.caption("Views CLIP sees each step: crops of other sizes, stretched, turned or mirrored, make pictures "
                   "that other CLIPs recognise too")
        setting_controls("views")

        st.subheader("Loss terms")
        term_controls()

        st.subheader("Device")
        options = device_options()
        notes.append(keep_valid("device", options, "auto"))
        st.selectbox("Device", options, key="device",
                     help=None if torch.cuda.is_available() else "no CUDA GPU is visible to torch on this machine")
        dtypes = ["auto", "float32", "bfloat16"] + ([] if on_cpu else ["float16"])
        notes.append(keep_valid("dtype", dtypes, "auto"))
        st.selectbox("Encoder precision", dtypes, key="dtype",
                     help="auto: bfloat16 where the hardware has it, else float32 (the bit-exact mode)"
                     + ("; float16 needs a CUDA GPU" if on_cpu else ""))
        st.text_area("CLIP models (an ensemble)", key="clip_models_text", height=68,
                     placeholder="empty: the server's CLIP (ViT-L/14)\nViT-B/32:1\nViT-L/14:0",
                     help="one per line, NAME[:WEIGHT]: OpenAI's names or open_clip:ARCH@TAG; weight 0 loads "
                          "ViT-L/14 for the aesthetic head alone (with 'Apply every N steps', the CPU's fast path)")
        st.selectbox("Compile the step", list(form.COMPILE_CHOICES), key="compile_choice",
                     format_func=COMPILE_LABELS.get, help=setting_of("compile").help)
        st.checkbox("Deterministic CUDA kernels", key="deterministic", disabled=on_cpu,
                    help="CPU runs are always deterministic" if on_cpu else setting_of("deterministic").help)
    return [n for n in notes if n]


def aspect_control() -> None:
    """The image's shape; Resolution is its long side. A restored size no listed shape gives
    exactly is offered as it is."""
    aspects = list(form.ASPECTS)
    if st.session_state.get("aspect") not in aspects:
        aspects.append(st.session_state.get("aspect") or "1:1 square")
    c1, c2 = st.columns(2)
    c1.selectbox("Aspect (width:height)", aspects, key="aspect",
                 help="the image's shape; Resolution is its long side, and CLIP sees squares spread along it")
    try:
        width, height = form.aspect_size(int(st.session_state.get("resolution") or 224), st.session_state["aspect"])
        c2.caption(f"Image: {width} x {height} px")
    except ValueError:
        pass


def setting_of(name: str, term: str | None = None) -> Setting:
    """The description of one of GenerationConfig's settings, or of `term`'s (help, range), for a
    control laid out by hand, so that its limits and words are the CLI's and the plans' too."""
    return next(s for f, s in described(TERMS[term].Settings if term else GenerationConfig) if f.name == name)


def setting_control(key: str, f, s: Setting, disabled: bool = False) -> None:
    """The widget a described setting asks for (settings.py), in two columns."""
    label, kind = s.label_for(f.name), kind_of(f)
    if s.choices:
        st.selectbox(label, s.choices, key=key, help=s.help, disabled=disabled)
    elif kind == "bool":
        st.checkbox(label, key=key, help=s.help, disabled=disabled)
    elif kind in ("int", "float", "optional_int", "optional_float"):
        cast = int if kind in ("int", "optional_int") else float
        st.number_input(label, key=key, help=s.help, format=s.format, disabled=disabled,
                        min_value=None if s.minimum is None else cast(s.minimum),
                        max_value=None if s.maximum is None else cast(s.maximum),
                        step=None if s.step is None else cast(s.step),
                        placeholder="none" if kind.startswith("optional") else None)
    else:
        st.text_input(label, key=key, help=s.help, disabled=disabled)


def setting_controls(group: str, disabled: dict[str, str] | None = None) -> None:
    """Every studio-laid setting of GenerationConfig in `group`; those in `disabled` greyed out,
    with the reason as their help."""
    fields = [(f, s) for f, s in described(GenerationConfig) if s.group == group and s.studio]
    cols = st.columns(2) if len(fields) > 1 else [st.container()]
    for i, (f, s) in enumerate(fields):
        with cols[i % 2]:
            reason = (disabled or {}).get(f.name)
            setting_control(f.name, f, dataclasses.replace(s, help=reason) if reason else s, disabled=reason is not None)




def canvas_controls(name: str) -> None:
    """The settings of a canvas that declares its own: single values in two columns, then its
    schedules, four widgets each."""
    cls = CANVASES[name]
    defaults = cls.Settings()
    fields = [(f, s) for f, s in described(cls.Settings) if s.studio and kind_of(f) != "schedule"]
    for f, _ in fields:
        st.session_state.setdefault(form.canvas_key(name, f.name), getattr(defaults, f.name))
    try:  # greyed, with the reason: what the other values leave unread (a palette in full colour)
        unused = unused_settings(form.canvas_settings_from_state(st.session_state, name))
    except (DasAgError, ValueError, TypeError):  # values the form refuses anyway, in its own words
        unused = {}
    cols = st.columns(2)
    for i, (f, s) in enumerate(fields):
        reason = unused.get(f.name)
        with cols[i % 2]:
            setting_control(form.canvas_key(name, f.name), f, dataclasses.replace(s, help=reason) if reason else s,
                            disabled=reason is not None)
    for f, s in described(cls.Settings):
        if s.studio and kind_of(f) == "schedule":
            prefix = form.canvas_key(name, f.name)
            for key, value in form.schedule_to_state(prefix, getattr(defaults, f.name)).items():
                st.session_state.setdefault(key, value)
            schedule_controls(f.name, prefix=prefix, described_as=s, narrow=True)


def term_controls() -> None:
    """The settings of terms that declare their own, one expander each."""
    for name, cls in TERMS.items():
        shown = cls.Settings is not None and any(s.studio or s.upload for _, s in described(cls.Settings))
        if shown:
            with st.expander(cls.heading()):
                defaults = cls.Settings()  # for a term registered after this session began
                for f, s in described(cls.Settings):
                    if s.studio:
                        st.session_state.setdefault(form.term_key(name, f.name), getattr(defaults, f.name))
                unused = form.term_unused(st.session_state, name)  # greyed, with the reason
                for f, s in described(cls.Settings):
                    if not s.studio:  # set another way (an upload below) or not at all
                        continue
                    reason = unused.get(f.name)
                    setting_control(form.term_key(name, f.name), f, dataclasses.replace(s, help=reason) if reason else s,
                                    disabled=reason is not None)
                for f, s in described(cls.Settings):
                    if s.upload is None:
                        continue
                    field, now = f.name, st.session_state.get(form.term_key(name, f.name))
                    st.file_uploader(s.upload.label, type=list(s.upload.suffixes), key=f"upload:{name}:{field}",
                                     on_change=on_term_upload, args=(name, field, s.upload.kind),
                                     help=f"now: {Path(now).name}" if now else None)
                    if now:
                        c1, c2 = st.columns([3, 1])
                        # A path that is not an upload (typed, or from a recipe) is refused under
                        # Generate; naming it here would echo a server file's name back as if in use.
                        refused = outside_uploads(cls.Settings.files_in({field: str(now)}))  # a built-in name is no file
                        c1.caption("In use: " + ("not an upload: refused" if refused
                                                 else st.session_state.get(f"upload_name:{name}:{field}", Path(now).name)))
                        c2.button("Remove", key=f"remove:{name}:{field}", on_click=remove_term_file, args=(name, field))


MASK = form.term_key("init", "mask")
PAINTED = "painted here"  # the name a painted mask is shown by


def mask_painter() -> None:
    """Paint, over the start picture, the part to repaint: the strokes become the mask, at the
    start picture's size (streamlit-drawable-canvas). Clearing the drawing clears a painted mask;
    an uploaded mask stays until it is removed."""
    from streamlit_drawable_canvas import st_canvas

    from das_ag.pictures import PictureError, opened

    ss = st.session_state
    image = str(ss.get(form.term_key("init", "image")) or "")
    if not image or outside_uploads([image]):
        return
    try:
        with opened(image, "the start picture") as opened_picture:
            picture = opened_picture.convert("RGB")
    except PictureError:
        return
    if ss.get("mask_painted") and not ss.get(MASK):  # its Remove was pressed: start a clean drawing
        ss["mask_round"] = ss.get("mask_round", 0) + 1
        ss["mask_painted"] = ""
    scale = min(480 / picture.width, 480 / picture.height)  # on screen: big enough to paint, never too tall
    width, height = max(1, round(picture.width * scale)), max(1, round(picture.height * scale))
    st.subheader("Repaint part of the start picture")
    st.caption("Paint the part to repaint; the rest of the start picture is kept as it is (no painting: all of "
               "it may change). The toolbar under the picture undoes or clears strokes.")
    brush = st.slider("Brush (px)", 4, 64, 32, key="mask_brush")
    painted = st_canvas(stroke_width=brush, stroke_color="rgba(255, 0, 160, 0.55)", background_image=picture.resize((width, height)),
                        width=width, height=height, drawing_mode="freedraw", return_image_data=True,
                        key=f"mask_canvas:{Path(image).name}:{ss.get('mask_round', 0)}")
    region = None if painted.image_data is None else painted.image_data[..., 3] > 0
    if region is None or not region.any():
        if ss.get("mask_painted") and ss.get(MASK) == ss["mask_painted"]:  # the drawing was cleared
            ss[MASK], ss["mask_painted"] = "", ""
            clear_checksums("init", "mask")
            st.rerun()
        return
    mask = Image.fromarray(region.astype("uint8") * 255, "L").resize(picture.size, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    path = str(save_upload("mask.png", buffer.getvalue(), kind="mask"))
    if ss.get(MASK) != path:
        ss[MASK], ss["mask_painted"], ss["upload_name:init:mask"] = path, path, PAINTED
        clear_checksums("init", "mask")
        st.rerun()  # the controls above the painter (what is in use) were drawn before it changed


IMAGE_PROMPTS = form.term_key("image_prompt", "images")


def image_prompt_controls() -> None:
    """Pictures to steer towards (weight 1 each; the CLI takes any signed weight)."""
    current = [e for e in st.session_state.get(IMAGE_PROMPTS, "").split("|") if e]
    st.file_uploader("Image prompts", type=list(PICTURE_SUFFIXES), accept_multiple_files=True,
                     key="image_prompt_upload", on_change=on_image_prompts,
                     help="pictures the image should look like to CLIP, like text prompts of weight 1")
    if current:
        shown = st.session_state.get("image_prompt_names") or {}
        names = ", ".join(shown.get(e, Path(e.rpartition(":")[0] or e).name) for e in current)
        c1, c2 = st.columns([4, 1])
        c1.caption(f"Steering towards {len(current)} picture(s): {names}")
        c2.button("Clear", key="clear_image_prompts", on_click=clear_image_prompts)


def on_image_prompts() -> None:
    uploads = st.session_state.get("image_prompt_upload") or []
    kept, names = [], {}
    for upload in uploads:
        try:
            entry = f"{save_upload(upload.name, upload.getvalue())}:1"
        except DasAgError as exc:
            st.session_state["notice"] = ("error", f"Could not use {upload.name}: {exc}")
            return
        kept.append(entry)
        names[entry] = upload.name  # shown by the name the user knows, stored by content
    st.session_state[IMAGE_PROMPTS] = "|".join(kept)
    st.session_state["image_prompt_names"] = names
    st.session_state[form.term_key("image_prompt", "sha256")] = ""  # the new pictures' own, computed again


def clear_image_prompts() -> None:
    st.session_state[IMAGE_PROMPTS] = ""
    st.session_state[form.term_key("image_prompt", "sha256")] = ""


def on_term_upload(name: str, field: str, kind: str) -> None:
    upload = st.session_state.get(f"upload:{name}:{field}")
    if upload is None:
        return
    try:
        path = save_upload(upload.name, upload.getvalue(), kind=kind)
    except DasAgError as exc:
        st.session_state["notice"] = ("error", f"Could not use {upload.name}: {exc}")
        return
    st.session_state[form.term_key(name, field)] = str(path)
    st.session_state[f"upload_name:{name}:{field}"] = upload.name
    clear_checksums(name, field)  # the new file's own, computed from it again
    st.session_state["notice"] = ("info", f"The {kind} {upload.name} is in use.")


def remove_term_file(name: str, field: str) -> None:
    st.session_state[form.term_key(name, field)] = ""
    clear_checksums(name, field)


def clear_checksums(name: str, field: str) -> None:
    """Empty the checksum settings of a term's file setting (Setting.checksum_of) that changed."""
    for f, s in described(TERMS[name].Settings):
        if s.checksum_of == field:
            st.session_state[form.term_key(name, f.name)] = ""


def weights_panel(problem: str) -> None:
    st.error("The model weights are not available yet, so nothing can be generated.")
    st.markdown(
        "das-ag needs OpenAI's **CLIP ViT-L/14** and LAION's **improved aesthetic predictor** head. Either:\n"
        "1. set `CLIP_MODEL_PATH` and `AESTHETIC_PREDICTOR_PATH` to local copies, in the environment or in a "
        "`.env` file in the folder you start the app from (see `.env.example`), then reload this page; or\n"
        "2. run `uv run das-ag download` where the network reaches them (or press the button below)."
    )
    st.caption(f"Details: {problem}")
    st.button("Download the weights now", on_click=download_weights)


def live_panel() -> None:
    job: Job | None = st.session_state.get("job")
    if job is None:
        return
    snap = job.snapshot()
    if snap.state == "queued":
        runs = "1 run is" if snap.ahead == 1 else f"{snap.ahead} runs are"
        st.info(f"Waiting for {snap.device or 'the device'}: {runs} ahead of yours (first come, first served).")
    elif snap.state == "loading":
        st.info("Loading the models (the first run of this server only; later runs reuse them) ...")
    last = snap.last_event
    if snap.state == "running" or last is not None:
        step = last.step if last else 0
        rate = last.steps_per_second if last else 0.0
        starting = ("compiling the step: about a minute the first time, seconds once cached" if snap.compiled
                    else "starting")
        left = f"{last.seconds_left:.0f} s left" if last and snap.active else ("finished" if not snap.active else starting)
        which = f"{snap.images} images together · " if snap.images > 1 else ""
        if snap.frames_total:  # a video: frame k's steps, and how far the video is
            steps = last.steps if last else snap.config.steps
            st.progress((snap.frame + step / steps) / snap.frames_total,
                        text=f"frame {snap.frame + 1}/{snap.frames_total} · step {step}/{steps} · {rate:.2f} steps/s"
                             f"{' · finished' if not snap.active else ''}")
        else:
            st.progress(step / snap.config.steps, text=f"{which}step {step}/{snap.config.steps} · {rate:.2f} steps/s · {left}")
    for warning in snap.warnings:
        st.warning(warning)
    if snap.active:
        if snap.images > 1:
            image_grid([(p, f"{c.method} · seed {c.seed}") for p, c in zip(snap.previews, snap.configs)])
            metric_charts(series(snap.metrics, 0), title=f"{snap.config.method} · seed {snap.config.seed}")
        else:
            image_col, chart_col = st.columns([1, 1])
            if snap.preview is not None:
                caption = "the last frame made" if snap.frames_total else f"preview at step {last.step if last else 0}"
                image_col.image(png_of(snap.preview), caption=caption, output_format="PNG")
            with chart_col:
                metric_charts(series(snap.metrics, 0))
    elif st.session_state.get("recorded_job") is not job:
        st.rerun(scope="app")  # the run ended: redraw the whole page with the result


def png_of(picture: Image.Image) -> bytes:
    """A preview's PNG bytes, encoded once: the live panel redraws each second, and st.image would
    encode the same picture again every time."""
    cache = st.session_state.setdefault("preview_png", {})
    key = id(picture)
    if key not in cache:
        if len(cache) > 16:
            cache.clear()
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", compress_level=1)
        cache[key] = (picture, buffer.getvalue())  # the picture itself keeps its id from being reused
    return cache[key][1]


def image_grid(pictures: list[tuple[Image.Image | None, str]], columns: int = 4) -> None:
    cols = st.columns(min(columns, max(1, len(pictures))))
    for i, (picture, caption) in enumerate(pictures):
        if picture is not None:
            cols[i % len(cols)].image(png_of(picture), caption=caption, output_format="PNG")


# Curves show at most this many points: a long run's page must not redraw thousands of them every
# second while the run competes with it for the CPU.
CHART_POINTS = 200


def metric_charts(history, title: str | None = None) -> None:
    """The loss and each term's metrics over the steps, one small chart per term."""
    if not history:
        return
    shown = history[:: max(1, -(-len(history) // CHART_POINTS))]
    if shown[-1] is not history[-1]:
        shown.append(history[-1])  # always the latest step
    steps = pd.Index([h[0] for h in shown], name="step")
    if title:
        st.caption(title)
    st.caption("loss")
    line_chart(pd.DataFrame({"loss": [h[1] for h in shown]}, index=steps))
    for term in dict.fromkeys(name for h in shown for name in h[2]):
        cls = term_class(term)
        labels = cls.labels if cls else {}
        prefix = cls.distribution if cls else None
        keys = list(dict.fromkeys(k for h in shown for k in h[2].get(term, {})))
        curves = [k for k in keys if not (prefix and k.startswith(prefix))]
        frame = pd.DataFrame({labels.get(k, k): [h[2].get(term, {}).get(k) for h in shown] for k in curves}, index=steps)
        st.caption((cls.chart_title or cls.heading()) if cls else f"{term} term")
        if prefix and len(curves) < len(keys):
            bars, lines = st.columns([1, 1])
            with bars:  # the latest step's distribution, largest first
                latest = {k[len(prefix):]: v for k, v in history[-1][2].get(term, {}).items() if k.startswith(prefix)}
                bar_chart(latest)
            with lines:
                line_chart(frame)
        else:
            line_chart(frame)


BAR_LIMIT = 10  # the largest shares of a distribution a bar chart shows


def bar_chart(shares: dict[str, float], height: int = 130) -> None:
    top = sorted(shares.items(), key=lambda kv: -kv[1])[:BAR_LIMIT]
    data = pd.DataFrame({"name": [k for k, _ in top], "share": [v for _, v in top]})
    st.vega_lite_chart(data, {
        "height": height,
        "mark": {"type": "bar"},
        "encoding": {
            "y": {"field": "name", "type": "nominal", "sort": "-x", "title": None},
            "x": {"field": "share", "type": "quantitative", "title": None, "scale": {"domain": [0, 1]}},
        },
    }, width="stretch")


def line_chart(frame: pd.DataFrame, height: int = 130) -> None:
    """Curves by step from a plain Vega-Lite spec: st.line_chart builds and validates an Altair
    chart on every redraw, which took the server's interpreter away from a running generation."""
    data = frame.reset_index().melt(id_vars="step", var_name="series").dropna()
    st.vega_lite_chart(data, {
        "height": height,
        "mark": {"type": "line"},
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "y": {"field": "value", "type": "quantitative", "scale": {"zero": False}, "title": None},
            # On the right: a legend below squeezed the plot to nothing inside Streamlit's fixed
            # height (flat lines, no y axis), as the studio showed until this was seen in a browser.
            "color": {"field": "series", "type": "nominal", "legend": {"orient": "right", "title": None}},
        },
    }, width="stretch")


def size_words(image: Image.Image) -> str:
    return f"{image.width} px" if image.width == image.height else f"{image.width} x {image.height} px"


def record_finished_job() -> None:
    """Once per finished job: keep its image (with recipe) in this session's gallery."""
    job: Job | None = st.session_state.get("job")
    if job is None or st.session_state.get("recorded_job") is job:
        return
    snap = job.snapshot()
    if snap.active:
        return
    st.session_state["recorded_job"] = job
    if not snap.results:
        st.session_state["notice"] = ("error", f"The run did not start: {snap.error}")
        return
    items = [
        {"files": r.files(), "config": r.config, "result": r, "metrics": series(snap.metrics, i),
         "saved": None, "error": r.message if r.status in ("non_finite", "failed") else None}
        for i, r in enumerate(snap.results)
    ]
    for item in items:
        item["png"] = item["files"][".png"]
        item["video"] = snap.video
    for item, frames in zip(items, snap.frames):
        # The image forming, ending on the saved image: kept as frames, encoded when asked for.
        last = small(item["result"].image)  # previews are kept small; the animation's frames match them
        item["frames"] = frames + ([last] if not frames or frames[-1].tobytes() != last.tobytes() else [])
    if snap.error and not any(item["error"] for item in items):
        items[-1]["error"] = snap.error
    st.session_state["gallery"].extend(items)
    st.session_state["last_items"] = items


def result_panel() -> None:
    items = st.session_state["last_items"]
    job = st.session_state.get("job")
    if not items or (job is not None and job.snapshot().active):
        return
    results = [item["result"] for item in items]
    finished = all(r.status == "completed" for r in results) and len(results) == len(job.configs if job else results)
    st.subheader("Finished" if finished else "Stopped")
    for item in items:
        if item["error"]:
            st.error(item["error"])
    if any(r.status == "cancelled" for r in results):
        st.warning(next(r.message for r in results if r.status == "cancelled"))
    if len(items) == 1:
        single_result(items[0])
    else:
        comparison(items)
    c1, c2, c3, c4 = st.columns([1, 1, 1, 1])
    unsaved = [i for i in items if not i["saved"]]
    kinds = [sfx.lstrip(".").upper() for sfx in items[0]["files"]]  # PNG, and SVG for a drawing
    label = " + ".join(kinds) if len(items) == 1 else f"{len(items)} " + " + ".join(k + "s" for k in kinds)
    c1.button(f"Save {label}", type="primary", on_click=save_latest,
              disabled=not unsaved, help=f"write into {output_root() / st.session_state['output_subfolder'].strip()}")
    if items[0].get("video"):
        video = Path(items[0]["video"])
        caption = f"the video: {video.name}, its frames in {video.stem}-frames/ under the output root"
        if video.suffix == ".mp4":
            st.video(str(video))
            st.caption(caption)
        else:
            st.image(str(video), caption=caption)
        mime = {".gif": "image/gif", ".webp": "image/webp", ".mp4": "video/mp4"}[video.suffix]
        c4.download_button("Download video", data=lambda: video.read_bytes(), file_name=video.name, mime=mime)
    if len(items) == 1:
        name = next_free_path(results[0].config, ".").name
        c2.download_button("Download PNG", data=items[0]["png"], file_name=name, mime="image/png")
        frames = items[0].get("frames", [])
        if len(frames) > 1:
            c4.download_button("Download animation", data=lambda: encode_animation(frames, ".gif"),
                               file_name=Path(name).with_suffix(".gif").name, mime="image/gif",
                               help=f"the image forming, {len(frames)} frames (one per preview)")
        if ".svg" in items[0]["files"]:
            c3.download_button("Download SVG", data=items[0]["files"][".svg"], file_name=Path(name).with_suffix(".svg").name,
                               mime="image/svg+xml")
    for item in items:
        if item["saved"]:
            st.caption(f"Saved as {item['saved']}")


def score_lines(result) -> str:
    """Every score of a finished image, with where the run started from."""
    start = result.initial_scores.numbers()
    lines = [f"- {score_description(k)}: **{v:.4f}**" + (f" (start {start[k]:.4f})" if start.get(k) is not None else "")
             for k, v in result.scores.numbers().items() if v is not None]
    styles = result.scores.values.get("styles")
    if styles:
        lines.append("- top styles: " + ", ".join(f"{s['label']} {s['p']:.2f}" for s in styles[:3]))
    return "\n".join(lines)


def single_result(item) -> None:
    result = item["result"]
    image_col, info_col = st.columns([1, 1])
    image_col.image(result.image, caption=f"{result.config.method} · seed {result.config.seed} · {size_words(result.image)}", output_format="PNG")
    with info_col:
        st.markdown(f"**{result.config.method}**, {result.steps_done} steps in {result.elapsed:.1f} s on {result.device}\n\n"
                    + score_lines(result))
        metric_charts(item["metrics"])


def comparison(items) -> None:
    """Variations (rows: seeds) and methods (columns), made together with every other setting equal."""
    configs = [item["config"] for item in items]
    methods = list(dict.fromkeys(c.method for c in configs))
    seeds = list(dict.fromkeys(c.seed for c in configs))
    if len(methods) > 1 and len(seeds) == 1:
        st.caption(f"Same prompts, settings and seed ({seeds[0]}); only the aesthetic guidance differs.")
    elif len(methods) > 1:
        st.caption(f"Same prompts and settings. Columns differ only in the aesthetic guidance; rows in the seed "
                   f"({', '.join(map(str, seeds))}).")
    else:
        st.caption("Same prompts and settings; each variation has its own seed.")
    cols = st.columns(len(methods) if len(methods) > 1 else min(4, len(items)))
    for i, item in enumerate(items):
        r = item["result"]
        with cols[i % len(cols)]:
            st.image(r.image, caption=f"{r.config.method} · seed {r.config.seed}", output_format="PNG")
            st.markdown(score_lines(r))
            cell_downloads(item, f"compare_download_{r.config.method}_{r.config.seed}")


def cell_downloads(item, key: str) -> None:
    """One image's files in a grid or the gallery, as a single result offers them: its PNG, a
    drawing's SVG, and the image forming as a GIF, so the image a user picks needs no re-run."""
    r = item["result"]
    name = Path(next_free_path(r.config, ".").name)
    files = [("PNG", item["png"], name.name, "image/png")]
    if ".svg" in item["files"]:
        files.append(("SVG", item["files"][".svg"], name.with_suffix(".svg").name, "image/svg+xml"))
    frames = item.get("frames", [])
    if len(frames) > 1:
        files.append(("GIF", lambda frames=frames: encode_animation(frames, ".gif"), name.with_suffix(".gif").name,
                      "image/gif"))
    for column, (kind, data, file_name, mime) in zip(st.columns(len(files)), files):
        column.download_button(kind, data=data, file_name=file_name, mime=mime, key=f"{key}_{kind}",
                               help="the image forming, one frame per preview" if kind == "GIF" else f"this image's {kind}")


def gallery_panel() -> None:
    gallery = st.session_state["gallery"]
    if len(gallery) < 2:
        return
    with st.expander(f"This session's images ({len(gallery)})"):
        cols = st.columns(4)
        for i, item in enumerate(reversed(gallery)):
            r = item["result"]
            with cols[i % 4]:
                st.image(r.image, caption=f"{r.config.method} · seed {r.config.seed}" + (f" · aes {r.scores.aesthetic:.2f}" if r.scores.aesthetic is not None else ""), output_format="PNG")
                cell_downloads(item, f"gallery_download_{len(gallery) - i}")


# -- the page ---------------------------------------------------------------------------------
def main() -> None:
    # A visitor never sees a traceback, however the server was started: the project's
    # .streamlit/config.toml is read only by a `streamlit run` started in the project folder.
    st.set_option("client.showErrorDetails", "none")
    st.set_page_config(page_title="das-ag studio", page_icon="🎨", layout="wide")
    weights.load_environment()
    launch_cublas_setting()
    init_state()
    record_finished_job()
    ss = st.session_state

    st.title("das-ag studio")
    st.caption("Images by direct ascent on CLIP, steered toward (or away from) what people find beautiful.")

    try:
        weights.resolve_clip(download=False)
        weights.resolve_aesthetic(download=False)
        weights_problem = None
    except WeightsError as exc:
        weights_problem = str(exc)

    on_cpu = ss.get("device") == "cpu" or (ss.get("device") == "auto" and not torch.cuda.is_available())
    notes = sidebar(on_cpu)
    if ss.get("notice"):
        level, text = ss["notice"]
        getattr(st, level)(text)
    for note in notes:
        st.warning(note)
    if weights_problem:
        weights_panel(weights_problem)

    st.subheader("Prompts")
    prompt_rows("pos", "Prompt")
    st.button("Add prompt", on_click=add_row, args=("pos",))
    prompt_rows("neg", "Negative prompt")
    st.button("Add negative prompt", on_click=add_row, args=("neg",))
    image_prompt_controls()
    mask_painter()

    st.subheader("Guidance")
    g1, g2, g3 = st.columns([2, 1, 1])
    guidance, weight = form.term_key("aesthetic", "guidance"), form.term_key("aesthetic", "weight")
    g1.radio("Aesthetic guidance", list(GUIDANCE_LABELS), key=guidance, format_func=GUIDANCE_LABELS.get, horizontal=True,
             help=setting_of("guidance", "aesthetic").help)
    aesthetic_off = "aesthetic guidance is off (DAS)" if ss[guidance] == "off" else None
    g2.number_input("Aesthetic weight", key=form.schedule_key(weight, "end"), min_value=0.0,
                    max_value=setting_of("weight", "aesthetic").maximum, step=0.5,
                    disabled=aesthetic_off is not None, help=aesthetic_off or "the weight the aesthetic schedule reaches")
    clip_weight = setting_of("weight", "text")
    g3.number_input("CLIP weight", key=form.term_key("text", "weight"), min_value=0.0, max_value=clip_weight.maximum,
                    step=0.5, help=clip_weight.help)
    with st.expander("Schedules"):
        schedule_controls("aesthetic", prefix=weight, described_as=setting_of("weight", "aesthetic"),
                          disabled_reason=aesthetic_off, end_above=True)
        schedule_controls("noise")
        schedule_controls("colour_shift")
        schedule_controls("jitter")

    _, problems = form.state_to_config(dict(ss))
    job = ss.get("job")
    running = job is not None and job.snapshot().active
    device = ss["device"]
    resolved = "cuda" if device == "auto" and torch.cuda.is_available() else device
    mode = determinism.mode(torch.device("cpu" if resolved == "auto" else resolved.split(":")[0]), bool(ss["deterministic"]))
    launched = launch_cublas_setting()
    st.caption(f"Reproducibility: {mode}" + (f"; {determinism.CUBLAS_ENV}={launched} at launch" if launched else ""))

    v1, v2, v3 = st.columns([1, 2, 1], vertical_alignment="bottom")
    v1.number_input("Variations", key="variations", min_value=1, max_value=4, disabled=ss["video_mode"],
                    help="images from the next seeds, made together in each step and shown as a grid")
    v2.toggle("Compare DAS / DAS-AG / DAS-rAG", key="compare_mode", disabled=ss["video_mode"],
              help="the three guidance signs with identical settings and seed, made together, side by side")
    v3.toggle("Make a video", key="video_mode",
              help="frames that each start from the last one, zoomed, panned and turned (settings below)")
    if ss["video_mode"]:
        video_controls()
    b1, b2, _ = st.columns([1, 1, 4])
    # Generate stays enabled while the form is incomplete: a prompt typed just before the click is
    # committed by that click, and start_job says what is missing. Problems show below the buttons,
    # so nothing moves under the pointer when they come or go.
    b1.button("Generate", type="primary", disabled=bool(weights_problem or running), on_click=start_job)
    b2.button("Stop", disabled=not running, on_click=stop_job, help="end the run now and keep the image so far")
    for problem in problems:
        st.caption(f":red[{problem}]")

    # The polling fragment sits alone in its own container: a late auto-rerun of a fragment can
    # clear the element that follows it (seen here: the result's heading vanished), so nothing
    # follows it inside that container.
    with st.container():
        st.fragment(run_every=POLL_SECONDS if running else None)(live_panel)()
    with st.container():
        result_panel()
        gallery_panel()


main()
