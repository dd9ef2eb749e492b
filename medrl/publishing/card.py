"""The model card of a stage checkpoint: README.md with the hub's YAML front matter.

Everything it states is read from the checkpoint and its run (medrl/publishing/evidence.py,
lineage.py); nothing is recomputed, and what could not be found is said, not left out. The
card is written into <checkpoint>/card/ as a whole folder at once (README.md, val_curve.png,
eval_comparison.png), so the checkpoint's own files are never touched and a crash leaves the
previous card.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medrl.checkpoints.manifest import Manifest
from medrl.prompts import get_format
from medrl.publishing.curve import VAL_CURVE, selection_section, val_curve_png, validation_section
from medrl.publishing.evidence import (
    Evaluation,
    StageRecord,
    dataset_ids,
    default_eval_dir,
    grpo_conventions,
    read_evaluation,
    read_selection,
    read_stage_config,
    read_validation,
)
from medrl.publishing.lineage import (
    Link,
    lineage_chain,
    lineage_table,
    root_model,
    unchanged_stages,
)
from medrl.publishing.settings import CardSettings, is_repo_id
from medrl.utils.io import atomic_directory

CARD_DIR = "card"
CARD_FILE = "README.md"
EVAL_CHART = "eval_comparison.png"
# The card always carries this; it is not a setting, so no config can drop it.
DISCLAIMER = (
    "**Medical disclaimer.** This model is a research artifact. It is not a medical device, has "
    "not been clinically validated, and must not be used to diagnose, treat or advise anyone, "
    "or to make any decision about a person's health. Its answers can be wrong while sounding "
    "confident; accuracy on exam-style questions (below, with its uncertainty) says nothing "
    "about safety in practice. Ask a qualified health professional for medical advice."
)


@dataclass(frozen=True)
class CardInputs:
    """Everything the card shows, gathered once (`gather`) and rendered by pure functions."""

    folder: Path
    manifest: Manifest
    form: str
    settings: CardSettings
    links: list[Link]
    stage: StageRecord
    conventions: dict[str, Any] | None
    conventions_source: str
    selection: dict[str, Any]
    validation: list[dict[str, Any]]
    eval_dir: Path | None
    evaluation: Evaluation | None
    repo_id: str | None = None
    verified: bool = False


def gather(
    folder: Path,
    form: str,
    settings: CardSettings,
    eval_dir: Path | None = None,
    repo_id: str | None = None,
    verified: bool = False,
) -> CardInputs:
    """Read the checkpoint `folder`, its lineage and its evaluation (eval_dir, else <run>/eval)."""
    manifest = Manifest.read(folder)
    stage = read_stage_config(folder, manifest.stage)
    conventions, source = grpo_conventions(folder, stage)
    searched = eval_dir if eval_dir is not None else default_eval_dir(folder)
    return CardInputs(
        folder=folder,
        manifest=manifest,
        form=form,
        settings=settings,
        links=lineage_chain(folder),
        stage=stage,
        conventions=conventions,
        conventions_source=source,
        selection=read_selection(folder),
        validation=read_validation(folder),
        eval_dir=searched,
        evaluation=read_evaluation(searched),
        repo_id=repo_id,
        verified=verified,
    )


def write_card(inputs: CardInputs) -> Path:
    """Write <checkpoint>/card/ (README.md, val_curve.png with >= 2 validations, the
    evaluation's chart) in one step, replacing an earlier card; returns the folder."""
    target = inputs.folder / CARD_DIR
    with atomic_directory(target) as staging:
        (staging / CARD_FILE).write_text(render_card(inputs), encoding="utf-8")
        if len(inputs.validation) >= 2:
            (staging / VAL_CURVE).write_bytes(val_curve_png(inputs.validation, inputs.selection))
        if inputs.evaluation is not None and inputs.evaluation.chart is not None:
            shutil.copyfile(inputs.evaluation.chart, staging / EVAL_CHART)
    return target


def render_card(inputs: CardInputs) -> str:
    """The whole README.md: front matter, then one section per subject."""
    sections = [
        front_matter(inputs),
        f"# {title(inputs)}\n\n{summary(inputs)}\n\n> {DISCLAIMER}\n",
        f"## Intended use\n\n{inputs.settings.intended_use.strip()}\n\n{_LIMITS}\n",
        lineage_section(inputs),
        data_section(inputs.manifest),
        format_section(inputs.manifest),
        conventions_section(inputs),
        selection_section(inputs.selection),
        validation_section(inputs.validation, inputs.selection),
        evaluation_section(inputs),
        usage_section(inputs),
        reproducibility_section(inputs),
    ]
    return "\n".join(sections)


# --- front matter and title ----------------------------------------------------------------


def front_matter(inputs: CardInputs) -> str:
    """The hub's metadata block (https://huggingface.co/docs/hub/model-cards)."""
    meta: dict[str, Any] = {}
    base = base_model_id(inputs)
    if base:
        meta["base_model"] = base
        meta["base_model_relation"] = "adapter" if inputs.form == "adapter" else "finetune"
    meta["library_name"] = "peft" if inputs.form == "adapter" else "transformers"
    meta["license"] = inputs.settings.license or "other"
    meta["language"] = list(inputs.settings.language)
    meta["pipeline_tag"] = "text-generation"
    runners = [r for r in _runners(inputs) if r]
    meta["tags"] = list(dict.fromkeys([*inputs.settings.tags, *runners]))
    datasets = [d for d in dataset_ids(inputs.stage.config) if is_repo_id(d)]
    if datasets:
        meta["datasets"] = datasets
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def base_model_id(inputs: CardInputs) -> str | None:
    """card.base_model, else the root model's hub id when it was loaded from the hub."""
    if inputs.settings.base_model:
        return inputs.settings.base_model
    root = root_model(inputs.links)
    spec = root.model_spec if root else {}
    path = spec.get("path")
    if spec.get("source") == "pretrained" and is_repo_id(path) and not Path(path).exists():
        return path
    return None


def title(inputs: CardInputs) -> str:
    if inputs.repo_id:
        return inputs.repo_id.split("/", 1)[1]
    return f"{inputs.manifest.root_model} - medrl {inputs.manifest.stage}"


def summary(inputs: CardInputs) -> str:
    m = inputs.manifest
    chain = " -> ".join(link.name for link in reversed(inputs.links))
    if inputs.form == "adapter":
        form = "a peft adapter, to be applied to its parent's weights (see Lineage)"
    elif m.adapter.get("kind") == "full":
        form = "its full weights (plain transformers)"
    else:
        form = "its full weights with the adapter merged in (plain transformers)"
    return (
        f"The `{m.stage}` stage of a medrl run (SFT / GRPO on medical QA): {chain}. Base model "
        f"`{m.root_model}`, dataset `{m.dataset}`, output format `{m.output_format.get('name')}`, "
        f"seed {m.seed}. This repository holds {form}."
    )


_LIMITS = (
    "Out of scope: clinical use of any kind; questions unlike the training data (other "
    "languages, formats or specialties); any use where a wrong answer can harm someone. "
    "Known limits: a small model fine-tuned on exam questions learns the exam's answer "
    "format and some of its content; it can reproduce errors and biases of its training data."
)


# --- lineage and data ----------------------------------------------------------------------


def lineage_section(inputs: CardInputs) -> str:
    """The chain newest first, every weights and parent hash, and what is unusual about it."""
    notes = []
    if inputs.links[-1].kind != "model":
        notes.append(
            "The chain could not be followed to the base model: the last point above is a "
            "parent checkpoint that could not be read here."
        )
    for name in unchanged_stages(inputs.links):
        notes.append(f"Stage `{name}` has the same weights hash as its parent: it changed nothing.")
    if inputs.verified:
        notes.append(
            "The merged weights were hashed at publishing time and match the manifest's "
            "`weights_hash`."
        )
    parent = inputs.manifest.parent
    if inputs.form == "adapter":
        notes.append(
            f"The adapter applies to its parent `{parent.name}` (weights hash "
            f"`{parent.weights_hash}`); `adapter_config.json` names the folder it was trained "
            "from, which must be replaced by where those weights are."
        )
    adapter = json.dumps(inputs.manifest.adapter, sort_keys=True)
    text = (
        "## Lineage\n\nEach point was trained from the one below it; hashes are sha256 of the "
        "weights (medrl/checkpoints/hashing.py), as recorded in each checkpoint's "
        "manifest.json (uploaded beside this card).\n\n"
        + lineage_table(inputs.links)
        + f"\nAdapter of this stage: `{adapter}`.\n"
    )
    return text + "".join(f"\n{note}\n" for note in notes)


def data_section(manifest: Manifest) -> str:
    """Dataset, seed and the pools the stage used, each with its size and ids hash."""
    lines = [
        "## Training data\n",
        f"Dataset `{manifest.dataset}`, seed {manifest.seed}. Pools used by this stage "
        "(the ids hash is sha256 of the ordered record ids: equal hashes, equal items):\n",
        "| pool | records | ids hash |",
        "| --- | ---: | --- |",
    ]
    for name, pool in manifest.data_pools.items():
        lines.append(f"| {name} | {pool.get('count', '?')} | `{pool.get('ids_hash', '?')}` |")
    return "\n".join(lines) + "\n"


# --- output format, chat settings, GRPO conventions ----------------------------------------


def format_section(manifest: Manifest) -> str:
    """The output format the stage was trained for, its system prompt, and the chat settings
    prompts must be rendered with (a model is only scored on the format it learned)."""
    record = dict(manifest.output_format)
    text = (
        "## Output format and chat settings\n\n"
        f"Output format `{record.get('name')}`:\n\n```json\n"
        + json.dumps(record, indent=2, sort_keys=True)
        + "\n```\n\nChat template arguments (pass them to `apply_chat_template`): `"
        + json.dumps(manifest.chat_template_kwargs, sort_keys=True)
        + "`\n"
    )
    prompt = _system_prompt(record)
    if prompt:
        text += (
            "\nSystem prompt (shown for options A-D; it names each question's own labels):"
            f"\n\n```text\n{prompt}\n```\n"
        )
    return text


def _system_prompt(record: Mapping[str, Any]) -> str | None:
    fields = {k: v for k, v in record.items() if k != "name"}
    try:
        return get_format(str(record.get("name")), **fields).system_prompt(["A", "B", "C", "D"])
    except (TypeError, ValueError):  # a format this medrl no longer has: the record says enough
        return None


def conventions_section(inputs: CardInputs) -> str:
    if inputs.conventions is None:
        source = inputs.conventions_source
        return f"## GRPO conventions\n\n{source[:1].upper()}{source[1:]}.\n"
    return (
        "## GRPO conventions\n\nEvery choice that changes the GRPO math (docs: the README's "
        f"GRPO conventions), from {inputs.conventions_source}:\n\n```yaml\n"
        + yaml.safe_dump(inputs.conventions, sort_keys=False).rstrip()
        + "\n```\n"
    )


# --- evaluation ----------------------------------------------------------------------------


def evaluation_section(inputs: CardInputs) -> str:
    """The eval stage's report as it wrote it (tables with intervals, paired comparisons),
    which row is this checkpoint, or where no evaluation was found."""
    evaluation = inputs.evaluation
    if evaluation is None:
        where = (
            f"at `{inputs.eval_dir}`"
            if inputs.eval_dir
            else "(the checkpoint is not in a run folder)"
        )
        return (
            f"## Evaluation\n\nNo evaluation was found {where}. Evaluate the checkpoint with "
            f"`python -m medrl.eval checkpoints=[{inputs.folder}]` and publish with "
            "`eval_dir=<that run>/eval`.\n"
        )
    stage = inputs.manifest.stage
    if stage in evaluation.rows:
        which = f"This checkpoint is the `{stage}` row."
    else:
        which = (
            f"**The evaluation has no `{stage}` row** (its rows: {', '.join(evaluation.rows)}): "
            "it may not have scored this checkpoint."
        )
    chart = f"\n![evaluation]({EVAL_CHART})\n" if evaluation.chart else ""
    return (
        f"## Evaluation\n\nFrom `{evaluation.folder}` (report.md and summary.json as the eval "
        "stage wrote them): every model on the same items with the same decoding (greedy unless "
        "the report says it sampled), strict parsing (an answer that does not parse is "
        "wrong); 95% intervals (Wilson for proportions, bootstrap "
        "otherwise); paired comparisons with a paired bootstrap interval of the difference and "
        f"McNemar's exact test. {which}\n{chart}\n" + _demoted(evaluation.report)
    )


def _demoted(markdown: str) -> str:
    """The report's headings one level down, under the card's Evaluation heading."""
    return re.sub(r"^(#+) ", r"#\1 ", markdown, flags=re.MULTILINE).rstrip() + "\n"


# --- usage and reproducibility -------------------------------------------------------------


def usage_section(inputs: CardInputs) -> str:
    repo = inputs.repo_id or "<namespace>/<name>"
    kwargs = ", ".join(f"{k}={v!r}" for k, v in inputs.manifest.chat_template_kwargs.items())
    kwargs = f", {kwargs}" if kwargs else ""
    if inputs.form == "adapter":
        load = (
            "from peft import PeftModel\n"
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'parent = AutoModelForCausalLM.from_pretrained("<the parent\'s weights>")\n'
            f'model = PeftModel.from_pretrained(parent, "{repo}")\n'
            'tokenizer = AutoTokenizer.from_pretrained("<the parent\'s weights>")\n'
        )
    else:
        load = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
        )
    return (
        "## How to use\n\nPrompt it as it was trained: the system prompt of its output format "
        "(above) as SYSTEM_PROMPT, the question and its options as the user turn, and its chat "
        "template arguments.\n\n```python\n"
        + load
        + 'messages = [{"role": "system", "content": SYSTEM_PROMPT}, '
        '{"role": "user", "content": question}]\n'
        "prompt = tokenizer.apply_chat_template(messages, tokenize=False, "
        f"add_generation_prompt=True{kwargs})\n"
        'inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)\n'
        "output = model.generate(**inputs, max_new_tokens=256)\n"
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], '
        "skip_special_tokens=True))\n```\n"
    )


def reproducibility_section(inputs: CardInputs) -> str:
    m = inputs.manifest
    version = json.dumps(m.code_version, sort_keys=True)
    created = m.created or "at an unknown time"
    problem = f"\nNote: {inputs.stage.problem}.\n" if inputs.stage.problem else ""
    return (
        f"## Reproducibility\n\nCode: `{version}`. Checkpoint written {created}; manifest "
        f"version {m.version}. The run's resolved config is config.yaml in the checkpoint "
        "folder (not uploaded: it names local paths).\n" + problem
    )


# --- formatting helpers --------------------------------------------------------------------


def _runners(inputs: CardInputs) -> list[str | None]:
    """The runners of the checkpoints of the chain that could be read, oldest first."""
    runners = []
    for link in reversed(inputs.links):
        if link.kind == "checkpoint":
            runners.append(read_stage_config(Path(link.location), link.name).runner)
    return runners
