"""The widgets of :class:`ftkit.cookbook.form.JobForm`: one per job field, with the ranges and help text read from
the spec's pydantic models (so the form and the spec cannot drift), laid out in rows a person can read: the field
at a width that fits its content, a one-line description under it, and its problem beside it.

Floats are text boxes, so a typed value is the saved value (a log slider snaps the learning rate in the browser);
bounded integers are sliders with an editable readout. Dropdown choices that mean "none" use a sentinel ("" or 0),
because a dropdown whose value is None shows blank.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal, get_args, get_origin

import annotated_types
import ipywidgets as W

from ftkit.job.spec import HYPERPARAMETER_FIELDS, LORA_MODULES, Hyperparameters, LocalSettings, LoraSpec
from ftkit.models.catalog import list_models

HP_FIELDS = HYPERPARAMETER_FIELDS
LORA_FIELDS = ("enabled", "r", "alpha", "dropout")
ZERO_IS_NULL = ("max_seq_length", "max_steps", "max_train_rows", "save_steps", "micro_batch_size", "trainable_layers")
TEXT_OR_NULL = ("validation_file", "label_column", "label_marker")  # local text fields where an empty box means null
LABELS_OFF = "none"  # typed into the labels box: task metrics off (labels [])
NO_PROMPT = ""  # the prompt-column choice "none"
LABEL_WIDTH = "150px"
_STYLE = {"description_width": LABEL_WIDTH}
WIDTHS = {"path": "640px", "choice": "480px", "slider": "480px", "number": "300px"}
_BIG = 10**9


def _range(cls, name: str) -> tuple:
    lo = hi = None
    for m in cls.model_fields[name].metadata:
        lo = m.ge if isinstance(m, annotated_types.Ge) else lo
        hi = m.le if isinstance(m, annotated_types.Le) else hi
    return lo, hi


def default(cls, name: str):
    return cls.model_fields[name].get_default(call_default_factory=True)


def _doc(cls, name: str) -> str:
    """The field's description, first sentence: the help line under the field."""
    text = " ".join((cls.model_fields[name].description or "").split())
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def _layout(kind: str) -> W.Layout:
    return W.Layout(width=WIDTHS[kind], flex="0 0 auto")


def csv_header(path: str | Path) -> list[str] | None:
    """The column names of a CSV file (or of train.csv in a prepared-dataset folder); None if unreadable."""
    p = Path(path)
    p = p / "train.csv" if p.is_dir() else p
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _widget_for(cls, name: str, value):
    """An input with the spec's range where a slider fits it; text boxes elsewhere (then an out-of-range value
    reaches the validation and is reported beside the field, rather than being silently clamped)."""
    lo, hi = _range(cls, name)
    kind = type(default(cls, name) if value is None else value)
    if name in ZERO_IS_NULL:
        return W.BoundedIntText(
            value=value or 0, min=0, max=_BIG, description=name, style=_STYLE, layout=_layout("number")
        )
    if kind is bool:
        return W.Checkbox(value=value, description=name, style=_STYLE, indent=True, layout=_layout("choice"))
    if kind is int and hi is not None and hi - lo <= 100:
        return W.IntSlider(value=value, min=lo, max=hi, description=name, style=_STYLE, layout=_layout("slider"))
    if kind is int:
        hi = hi if hi is not None else _BIG
        return W.BoundedIntText(value=value, min=lo, max=hi, description=name, style=_STYLE, layout=_layout("number"))
    return W.FloatText(value=value, description=name, style=_STYLE, layout=_layout("number"))


def _text(value: str, description: str, placeholder: str = "") -> W.Text:
    return W.Text(value=value, description=description, placeholder=placeholder, style=_STYLE, layout=_layout("path"))


def _dropdown(options, value, description: str) -> W.Dropdown:
    return W.Dropdown(options=options, value=value, description=description, style=_STYLE, layout=_layout("choice"))


def _choice_list(annotation) -> list[str]:
    """The choices of a list-of-Literal field (e.g. local.report_to), less "none" (an empty list says none); [] for
    any other field."""
    if get_origin(annotation) is not list or get_origin(get_args(annotation)[0]) is not Literal:
        return []
    return [c for c in get_args(get_args(annotation)[0]) if c != "none"]


def _tags(choices: list[str], value, description: str) -> W.TagsInput:
    return W.TagsInput(
        value=list(value),
        allowed_tags=choices,
        allow_duplicates=False,
        description=description,
        style=_STYLE,
        layout=_layout("choice"),
    )


class FormFields:
    """Builds the widgets; :class:`~ftkit.cookbook.form.JobForm` adds the behaviour."""

    # --- building ---
    def _build(self, body: dict | None, save_path: str, estimate_steps: int) -> None:
        body = body or {}
        self.widgets: dict[str, W.ValueWidget] = {}
        self._messages: dict[str, W.HTML] = {}
        self._rows: dict[str, W.Box] = {}
        self._job_fields(body)
        self._training_fields(body.get("hyperparameters", {}))
        self._local_fields(body.get("local", {}))
        self.messages = W.HTML()
        self._build_actions(save_path, estimate_steps)
        self.widget = self._layout()
        self.widget.add_class("ftkit-job-form")

    def _job_fields(self, body: dict) -> None:
        """Name, base model, data files and columns."""
        local, ds = body.get("local", {}), body.get("dataset", {})
        models = [(f"{m.name} ({m.kind})", m.id or "bundled") for m in list_models()]
        self._add(
            "name", _text(body.get("name", "my-job"), "name"), "The job's name; also its id: running it again resumes."
        )
        self._add(
            "base_model_id",
            _dropdown(models, "bundled", "base model"),
            "The service's models and the bundled CPU model.",
        )
        other = _text("", "or model", "a local model folder or a Hugging Face repo id")
        self._add("model_other", other, "Overrides the list above when given; leave empty to use it.")
        train = _text(self._shown_path(ds.get("id", "")), "train data", "a CSV file, or a folder with train.csv")
        self._add("dataset.id", train, "Relative paths start at the notebook's folder.")
        val = _text(
            self._shown_path(local.get("validation_file") or ""),
            "validation CSV",
            "optional: else the folder's validation.csv, else 1% of the training rows",
        )
        self._add("local.validation_file", val, "Evaluated n_evals times during training.")
        self._add(
            "dataset.prompt_column",
            _dropdown([], None, "prompt column"),
            "The CSV column with the prompts; none trains on the answers alone.",
        )
        self._add("dataset.answer_column", _dropdown([], None, "answer column"), "The CSV column the model learns.")
        self._columns = (ds.get("prompt_column"), ds.get("answer_column")) if ds else ("prompt", "answer")

    def _training_fields(self, hp: dict) -> None:
        """The hyperparameters and the LoRA section, bounded by the spec's ranges."""
        lora = hp.get("lora", {})
        for name in HP_FIELDS:
            value = hp.get(name, default(Hyperparameters, name))
            w = _dropdown([value], value, name) if name == "batch_size" else _widget_for(Hyperparameters, name, value)
            self._add(f"hyperparameters.{name}", w, _doc(Hyperparameters, name))
        for name in LORA_FIELDS:
            value = lora.get(name, default(LoraSpec, name))
            self._add(f"hyperparameters.lora.{name}", _widget_for(LoraSpec, name, value), _doc(LoraSpec, name))
        chosen = set(lora.get("trainable_modules", []))
        self.modules = {
            m: W.Checkbox(value=m in chosen, description=m, indent=False, layout=W.Layout(width="130px"))
            for m in LORA_MODULES
        }
        grid = W.GridBox(
            list(self.modules.values()), layout=W.Layout(grid_template_columns="repeat(4, 130px)", width="560px")
        )
        label = W.HTML(
            "<div style='text-align:right;padding-right:8px'>trainable_modules</div>",
            layout=W.Layout(width=LABEL_WIDTH, min_width=LABEL_WIDTH),
        )
        self._add_row(
            "hyperparameters.lora.trainable_modules",
            W.HBox([label, grid]),
            "None checked = all linear layers (all-linear).",
        )

    def _local_fields(self, local: dict) -> None:
        """The ``local`` section (validation_file sits with the data files)."""
        for name in LocalSettings.model_fields:
            if name == "validation_file":
                continue
            value = local.get(name, default(LocalSettings, name))
            if name == "micro_batch_size":
                w = _dropdown([("auto (= batch_size)", 0)], 0, name)
                self._micro_initial = value or 0
            elif get_origin(LocalSettings.model_fields[name].annotation) is Literal:
                w = _dropdown(get_args(LocalSettings.model_fields[name].annotation), value, name)
            elif _choice_list(LocalSettings.model_fields[name].annotation):
                w = _tags(_choice_list(LocalSettings.model_fields[name].annotation), value, name)
            elif name in ("output_dir", *TEXT_OR_NULL):
                w = _text(value or "", name, placeholder="" if name == "output_dir" else "none (null)")
            elif name == "labels":
                text = LABELS_OFF if value == [] else ", ".join(value or [])
                w = _text(text, name, placeholder="auto: yes, no, maybe when the rows carry them")
            else:
                w = _widget_for(LocalSettings, name, value)
            doc = _doc(LocalSettings, name) + (" 0 = auto (null)." if name in ZERO_IS_NULL else "")
            self._add(f"local.{name}", w, doc)

    def _layout(self):
        """Sections in the order a user fills them in; the local settings collapsed."""
        local_box = W.Accordion(
            children=[
                W.VBox([self._rows[p] for p in self.widgets if p.startswith("local.") and p != "local.validation_file"])
            ],
            titles=("Local settings (optional: seed, memory, precision, device, output)",),
        )
        local_box.selected_index = None
        section = lambda t: W.HTML(f"<h4 style='margin:10px 0 2px 0'>{t}</h4>")  # noqa: E731
        rows = lambda prefix: [r for p, r in self._rows.items() if p.startswith(prefix)]  # noqa: E731
        return W.VBox(
            [
                section("Job"),
                *[self._rows[p] for p in ("name", "base_model_id", "model_other")],
                section("Data"),
                *rows("dataset.id"),
                self._rows["local.validation_file"],
                *rows("dataset.p"),
                *rows("dataset.a"),
                section("Hyperparameters"),
                *[self._rows[f"hyperparameters.{n}"] for n in HP_FIELDS],
                section("LoRA"),
                *rows("hyperparameters.lora"),
                local_box,
                self.messages,
                self._actions,
            ],
            layout=W.Layout(max_width="1100px"),
        )

    def _add(self, path: str, widget, doc: str = "") -> None:
        widget.tooltip = doc or None
        self.widgets[path] = widget
        self._add_row(path, widget, doc)

    def _add_row(self, path: str, field, doc: str) -> None:
        """The field, its problem beside it (wrapping in the space left, never squashing the field), and its help
        line under it, indented to the field."""
        self._messages[path] = W.HTML(layout=W.Layout(flex="1 1 0%", min_width="220px", margin="0 0 0 12px"))
        help_line = W.HTML(
            f"<span style='color:#616161;font-size:90%'>{doc}</span>" if doc else "",
            layout=W.Layout(margin=f"-4px 0 4px calc({LABEL_WIDTH} + 8px)"),
        )
        row = W.VBox([W.HBox([field, self._messages[path]], layout=W.Layout(align_items="center")), help_line])
        row.add_class("ftkit-field")
        self._rows[path] = row

    def _build_actions(self, save_path: str, estimate_steps: int) -> None:
        auto = W.Layout(width="auto")
        self.estimate_button = W.Button(description="Estimate", icon="calculator", layout=auto)
        self.estimate_measure = W.Checkbox(
            value=True, description="time training steps (loads the model)", indent=False, layout=auto
        )
        self.estimate_steps = W.BoundedIntText(
            value=estimate_steps, min=1, max=50, description="steps", layout=W.Layout(width="150px")
        )
        self.estimate_progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="300px"))
        self.estimate_stage = W.Label()
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="warning", layout=auto)
        self.estimate_running = W.HBox([self.estimate_progress, self.estimate_stage, self.stop_button])
        self.estimate_running.layout.display = "none"
        self.estimate_html = W.HTML()
        self.estimate_panel = W.VBox([self.estimate_running, self.estimate_html])
        self.estimate_panel.add_class("ftkit-estimate")
        self.preview_button = W.Button(description="Show a training example", icon="eye", layout=auto)
        self.preview_html = W.HTML()
        self.save_path = _text(self._shown_path(str(save_path)), "save to")
        self.save_button = W.Button(description="Save job", icon="save", button_style="primary", layout=auto)
        self.save_status = W.HTML()
        self.estimate_button.on_click(self._estimate)
        self.stop_button.on_click(self._stop_estimate)
        self.preview_button.on_click(self._preview)
        self.save_button.on_click(self._save)
        self._actions = W.VBox(
            [
                W.HBox([self.estimate_button, self.estimate_measure, self.estimate_steps]),
                self.estimate_panel,
                W.HBox([self.preview_button]),
                self.preview_html,
                W.HBox([self.save_path, self.save_button]),
                self.save_status,
            ]
        )
