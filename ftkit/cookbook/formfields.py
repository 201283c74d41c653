"""The widgets of :class:`ftkit.cookbook.form.JobForm`: one per job field, with the ranges and help text read from
the spec's pydantic models (so the form and the spec cannot drift), laid out in sections."""

from __future__ import annotations

import csv
from pathlib import Path

import annotated_types
import ipywidgets as W

from ftkit.job.spec import HYPERPARAMETER_FIELDS, LORA_MODULES, Hyperparameters, LocalSettings, LoraSpec
from ftkit.models.catalog import list_models

HP_FIELDS = HYPERPARAMETER_FIELDS
LORA_FIELDS = ("enabled", "r", "alpha", "dropout")
ZERO_IS_NULL = ("max_seq_length", "max_steps", "max_train_rows", "save_steps")  # 0 in the box = null
_WIDE = {"description_width": "150px"}
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
    return " ".join((cls.model_fields[name].description or "").split())


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
    """A bounded input with the spec's range, or a plain one where the spec has no upper limit (then an
    out-of-range value reaches the validation and is reported, rather than being silently clamped)."""
    lo, hi = _range(cls, name)
    kind = type(default(cls, name) if value is None else value)
    if name in ZERO_IS_NULL:
        return W.BoundedIntText(value=value or 0, min=0, max=_BIG, description=f"{name} (0 = auto)", style=_WIDE)
    if kind is bool:
        return W.Checkbox(value=value, description=name, style=_WIDE, indent=False)
    if name == "learning_rate":
        return W.FloatLogSlider(
            value=value,
            base=10,
            min=-8,
            max=-2,
            step=0.05,
            readout_format=".1e",
            description=name,
            style=_WIDE,
        )
    if kind is int and hi is not None and hi - lo <= 100:
        return W.IntSlider(value=value, min=lo, max=hi, description=name, style=_WIDE)
    if kind is float and hi is not None:
        return W.FloatSlider(value=value, min=lo, max=hi, step=0.01, description=name, style=_WIDE)
    if kind is int:
        return W.BoundedIntText(value=value, min=lo, max=hi if hi is not None else _BIG, description=name, style=_WIDE)
    return W.FloatText(value=value, description=name, style=_WIDE)


class FormFields:
    """Builds the widgets; :class:`~ftkit.cookbook.form.JobForm` adds the behaviour."""

    # --- building ---
    def _build(self, body: dict | None, save_path: str) -> None:
        body = body or {}
        self.widgets: dict[str, W.ValueWidget] = {}
        self._messages: dict[str, W.HTML] = {}
        self._rows: dict[str, W.Box] = {}
        self._job_fields(body)
        self._training_fields(body.get("hyperparameters", {}))
        self._local_fields(body.get("local", {}))
        self.messages = W.HTML()
        self._build_actions(save_path)
        self.widget = self._layout()

    def _job_fields(self, body: dict) -> None:
        """Name, base model, data files and columns."""
        local, ds = body.get("local", {}), body.get("dataset", {})
        models = [(f"{m.name} ({m.kind})", m.id or "bundled") for m in list_models()]
        self._add("name", W.Text(value=body.get("name", "my-job"), description="name", style=_WIDE))
        self._add(
            "base_model_id",
            W.Dropdown(options=models, value="bundled", description="base model", style=_WIDE),
        )
        self._add(
            "model_other",
            W.Text(
                value="",
                description="or model",
                style=_WIDE,
                placeholder="a local model folder or a Hugging Face repo id",
            ),
        )
        self._add(
            "dataset.id",
            W.Text(
                value=ds.get("id", ""),
                description="train data",
                style=_WIDE,
                placeholder="a CSV file, or a folder with train.csv",
            ),
        )
        self._add(
            "local.validation_file",
            W.Text(
                value=local.get("validation_file") or "",
                style=_WIDE,
                description="validation CSV",
                placeholder="optional: else validation.csv or a 1% hold-out",
            ),
        )
        self._add("dataset.prompt_column", W.Dropdown(options=[], description="prompt column", style=_WIDE))
        self._add("dataset.answer_column", W.Dropdown(options=[], description="answer column", style=_WIDE))
        self._columns = (ds.get("prompt_column"), ds.get("answer_column")) if ds else ("prompt", "answer")

    def _training_fields(self, hp: dict) -> None:
        """The hyperparameters and the LoRA section, bounded by the spec's ranges."""
        lora = hp.get("lora", {})
        for name in HP_FIELDS:
            value = hp.get(name, default(Hyperparameters, name))
            w = (
                W.Dropdown(options=[value], value=value, description=name, style=_WIDE)
                if name == "batch_size"
                else _widget_for(Hyperparameters, name, value)
            )
            self._add(f"hyperparameters.{name}", w, _doc(Hyperparameters, name))
        for name in LORA_FIELDS:
            value = lora.get(name, default(LoraSpec, name))
            self._add(f"hyperparameters.lora.{name}", _widget_for(LoraSpec, name, value), _doc(LoraSpec, name))
        chosen = set(lora.get("trainable_modules", []))
        self.modules = {
            m: W.Checkbox(value=m in chosen, description=m, indent=False, layout=W.Layout(width="110px"))
            for m in LORA_MODULES
        }
        self._add_row(
            "hyperparameters.lora.trainable_modules",
            [
                W.HTML("<b>trainable_modules</b>: none checked = all linear layers (all-linear)"),
                W.HBox(list(self.modules.values())),
            ],
        )

    def _local_fields(self, local: dict) -> None:
        """The ``local`` section (validation_file sits with the data files)."""
        for name in LocalSettings.model_fields:
            if name == "validation_file":
                continue
            value = local.get(name, default(LocalSettings, name))
            if name == "micro_batch_size":
                w = W.Dropdown(options=[("auto (= batch_size)", None)], value=None, description=name, style=_WIDE)
                self._micro_initial = value
            elif name in ("precision", "batching", "device"):
                choices = LocalSettings.model_fields[name].annotation.__args__
                w = W.Dropdown(options=choices, value=value, description=name, style=_WIDE)
            elif name == "output_dir":
                w = W.Text(value=value, description=name, style=_WIDE)
            else:
                w = _widget_for(LocalSettings, name, value)
            self._add(f"local.{name}", w, _doc(LocalSettings, name))

    def _layout(self):
        """Sections in the order a user fills them in; the local settings collapsed."""
        local_box = W.Accordion(
            children=[
                W.VBox([self._rows[p] for p in self.widgets if p.startswith("local.") and p != "local.validation_file"])
            ],
            titles=("Local settings (optional: seed, memory, precision, device, output)",),
        )
        local_box.selected_index = None
        section = lambda t: W.HTML(f"<b>{t}</b>")  # noqa: E731
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
            ]
        )

    def _add(self, path: str, widget, doc: str = "") -> None:
        widget.tooltip = doc or None
        self.widgets[path] = widget
        self._add_row(path, [widget])

    def _add_row(self, path: str, children: list) -> None:
        self._messages[path] = W.HTML()
        self._rows[path] = W.HBox([*children, self._messages[path]])

    def _build_actions(self, save_path: str) -> None:
        self.estimate_button = W.Button(description="Estimate", icon="calculator")
        self.estimate_measure = W.Checkbox(
            value=True, description="time a few training steps (loads the model)", indent=False
        )
        self.estimate_steps = W.BoundedIntText(value=3, min=1, max=50, description="steps", layout={"width": "140px"})
        self.estimate_html = W.HTML()
        self.preview_button = W.Button(description="Show a training example", icon="eye")
        self.preview_html = W.HTML()
        self.save_path = W.Text(value=str(save_path), description="save to")
        self.save_button = W.Button(description="Save job", icon="save", button_style="primary")
        self.save_status = W.HTML()
        self.estimate_button.on_click(self._estimate)
        self.preview_button.on_click(self._preview)
        self.save_button.on_click(self._save)
        self._actions = W.VBox(
            [
                W.HBox([self.estimate_button, self.estimate_measure, self.estimate_steps]),
                self.estimate_html,
                self.preview_button,
                self.preview_html,
                W.HBox([self.save_path, self.save_button]),
                self.save_status,
            ]
        )
