"""A task as data: the JSON spec that says what a record holds (`format`), how its prompt reads
(`template`, `system`), which metric the gate judges (`metric`) and how long an answer may be.
Preprocess reads records by it, training and evaluation render prompts from it, and serving
builds its request bodies from it, so every side sees one prompt. Host code imports it too.

Three record formats, the ones TRL and SageMaker JumpStart use:
- `messages`: `{"messages": [{"role", "content"}, ...]}`; the last turn is the assistant's
  answer (the target), earlier turns (system, user, assistant) are the prompt.
- `prompt_completion`: `{"prompt": "...", "completion": "..."}`.
- `fields`: the data's own fields; `template` names them as `{field}` and `target_field` holds
  the answer.

A record's *task input* is what a prompt is rendered from and what a client sends: the text of
a one-placeholder template or of a prompt, an object of the template's fields, or the turns
before the answer. Standard library only: it runs in the jobs too.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import re
import string
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TASK_SPEC_FILE = "task.json"  # beside each preprocessed split file (contracts.SPLIT_FILE)
SPECS_DIR = Path(__file__).parent / "task_specs"  # the tasks the project ships
DEFAULT_TASK = "dialogue-summary"
# A task names an inference component (`<endpoint>-<task>`, at most 63 characters) and a URL
# path: lower-case letters, digits and single hyphens.
TASK_NAME = re.compile(r"[a-z0-9](-?[a-z0-9]){0,31}")
ROLES = ("system", "user", "assistant")
DEFAULT_ANSWER_CUE = "Answer:"
MAX_NEW_TOKENS_LIMIT = 512  # what an endpoint generates at most for one request
# Prompt and answer tokens at most, everywhere a model reads a task: train.py's
# --max-seq-length, evaluation's prompts (fitted to this less the answer's tokens), the local
# endpoint and LMI's OPTION_MAX_MODEL_LEN (both refuse a longer request), so a served adapter
# never reads a longer context than it was trained and scored on.
MAX_CONTEXT_TOKENS = 1024
OTHER_LABEL = "(other)"  # a label task's answer outside its labels (scoring, the report)

Message = dict[str, str]
TaskInput = str | dict[str, str] | list[Message]


class TaskSpecError(ValueError):
    """A task spec that cannot be used; the message names the file, the key and the fix."""


class TaskFormat(enum.StrEnum):
    MESSAGES = "messages"
    PROMPT_COMPLETION = "prompt_completion"
    FIELDS = "fields"


class Metric(enum.StrEnum):
    ROUGE_L = "rougeL"  # rouge_score's ROUGE-L F1, stemmed
    EXACT_MATCH = "exact_match"  # answers equal after normalizing case and spaces
    TOKEN_F1 = "token_f1"  # SQuAD's word-overlap F1
    CHRF = "chrf"  # sacrebleu's chrF, 0..1
    LABEL_ACCURACY = "label_accuracy"  # the answer is the reference label (one of `labels`)


class InvalidTextError(ValueError):
    """Raised by a `clean` function for a text no record may hold (`reason` as InvalidRecord's)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class InvalidRecord:
    """Why a record does not fit the task: preprocess's drop reason and its message."""

    reason: str
    message: str


@dataclass(frozen=True)
class TaskSpec:
    name: str
    format: TaskFormat
    metric: Metric = Metric.ROUGE_L
    template: str = ""  # `fields`: required; `prompt_completion`: optional, over `{prompt}`
    target_field: str = ""  # `fields` only
    system: str = ""  # the system prompt, unless a `messages` record brings its own
    labels: tuple[str, ...] = ()  # `label_accuracy`: the allowed answers
    max_new_tokens: int = 48
    # What a tokenizer without a chat template reads before the answer.
    answer_cue: str = DEFAULT_ANSWER_CUE
    description: str = ""
    placeholders: tuple[str, ...] = field(default=(), compare=False, repr=False)

    # --- the record -> (task input, target) ---------------------------------------------

    def read_record(
        self, fields: dict[str, Any], clean: Callable[[str], str]
    ) -> tuple[TaskInput, str] | InvalidRecord:
        """The task input and target of a record, each text passed through `clean`, or why
        the record does not fit the task."""
        read = self._read_input_and_target(fields, clean)
        if isinstance(read, InvalidRecord) or self.metric is not Metric.LABEL_ACCURACY:
            return read
        if read[1].casefold() not in {label.casefold() for label in self.labels}:
            return InvalidRecord(
                "unknown_label",
                f"the answer {read[1]!r} is not one of task {self.name}'s labels "
                f"({', '.join(self.labels)}); an answer nobody could give would score nothing",
            )
        return read

    def _read_input_and_target(
        self, fields: dict[str, Any], clean: Callable[[str], str]
    ) -> tuple[TaskInput, str] | InvalidRecord:
        if self.format is TaskFormat.MESSAGES:
            return self._read_messages(fields, clean)
        names = (*self.input_fields, self.target_key)
        values: dict[str, str] = {}
        for name in names:
            value = _text_field(fields, name, clean, self._fix_for(name))
            if isinstance(value, InvalidRecord):
                return value
            values[name] = value
        target = values.pop(self.target_key)
        if len(values) == 1:
            return next(iter(values.values())), target
        return values, target

    def _fix_for(self, name: str) -> str:
        if self.format is TaskFormat.PROMPT_COMPLETION:
            return f"task {self.name}'s records hold `prompt` and `completion`"
        which = "target_field" if name == self.target_key else "template"
        return (
            f"task {self.name}'s {which} names it: rename the data's field or describe your "
            "fields in a task spec (--task-spec)"
        )

    def _read_messages(
        self, fields: dict[str, Any], clean: Callable[[str], str]
    ) -> tuple[TaskInput, str] | InvalidRecord:
        turns = fields.get("messages")
        if not isinstance(turns, list) or not turns:
            present = ", ".join(sorted(map(str, fields))) or "none"
            return InvalidRecord(
                "missing_field",
                f'field "messages" is missing or not a list of turns (fields present: {present})',
            )
        cleaned: list[Message] = []
        for number, turn in enumerate(turns, start=1):
            if isinstance(turn, dict):  # Parquet and hub datasets give every turn every key
                turn = {k: v for k, v in turn.items() if v is not None or k == "content"}
            if not isinstance(turn, dict) or "role" not in turn:
                return InvalidRecord(
                    "not_text", f"turn {number} must be an object with `role` and `content`"
                )
            if set(turn) - {"role", "content"}:
                extra = sorted(set(turn) - {"role", "content"})
                return InvalidRecord(
                    "not_text", f"turn {number} holds {extra}: a turn has `role` and `content` only"
                )
            role, content = turn["role"], turn.get("content")
            if role not in ROLES:
                return InvalidRecord(
                    "not_text", f"turn {number}: role {role!r} is not one of {', '.join(ROLES)}"
                )
            text = _checked_text(content, f"turn {number} ({role})", clean)
            if isinstance(text, InvalidRecord):
                return text
            cleaned.append({"role": role, "content": text})
        if cleaned[-1]["role"] != "assistant":
            return InvalidRecord(
                "not_text",
                f"the last turn is the {cleaned[-1]['role']}'s: a messages record ends with the "
                "assistant's answer, which the adapter learns",
            )
        if not any(t["role"] == "user" for t in cleaned[:-1]):
            return InvalidRecord("missing_field", "no user turn before the assistant's answer")
        if any(t["role"] == "system" for t in cleaned[1:]):
            return InvalidRecord("not_text", "a system turn may only come first")
        try:
            check_turns(cleaned[:-1])
        except TaskSpecError as err:
            return InvalidRecord("not_text", str(err))
        return cleaned[:-1], cleaned[-1]["content"]

    # --- task input -> the prompt's messages ---------------------------------------------

    @property
    def input_fields(self) -> tuple[str, ...]:
        if self.format is TaskFormat.PROMPT_COMPLETION:
            return ("prompt",)
        return self.placeholders

    @property
    def target_key(self) -> str:
        return "completion" if self.format is TaskFormat.PROMPT_COMPLETION else self.target_field

    def messages(self, task_input: TaskInput) -> list[Message]:
        """The prompt's turns for a task input: the system prompt, then the user's turn the
        template renders (or the record's own turns)."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        if self.format is TaskFormat.MESSAGES:
            turns = check_turns(task_input)
            return turns if turns[0]["role"] == "system" else [*system, *turns]
        values = self.input_values(task_input)
        template = self.template or "{prompt}"
        return [*system, {"role": "user", "content": template.format_map(values)}]

    def input_values(self, task_input: TaskInput) -> dict[str, str]:
        """A `fields` or `prompt_completion` task input as {field: text}; a bare text fills a
        one-field template."""
        names = self.input_fields
        if isinstance(task_input, str):
            if len(names) != 1:
                raise TaskSpecError(
                    f"task {self.name} reads {len(names)} fields ({', '.join(names)}): send "
                    "an object with each, not one text"
                )
            return {names[0]: task_input}
        if not isinstance(task_input, dict) or set(task_input) != set(names):
            got = sorted(task_input) if isinstance(task_input, dict) else type(task_input).__name__
            raise TaskSpecError(f"task {self.name} reads the fields {list(names)}, got {got}")
        bad = [name for name, value in task_input.items() if not isinstance(value, str)]
        if bad:
            raise TaskSpecError(f"task {self.name}: field {bad[0]!r} must be text")
        return dict(task_input)

    def texts(self, task_input: TaskInput) -> list[str]:
        """Every text of a task input, in prompt order (what a token budget cuts)."""
        if self.format is TaskFormat.MESSAGES:
            return [t["content"] for t in check_turns(task_input)]
        return list(self.input_values(task_input).values())

    def with_texts(self, task_input: TaskInput, texts: list[str]) -> TaskInput:
        """The task input with its texts replaced, in `texts()` order."""
        if self.format is TaskFormat.MESSAGES:
            turns = check_turns(task_input)
            return [{"role": t["role"], "content": x} for t, x in zip(turns, texts, strict=True)]
        if isinstance(task_input, str):
            (text,) = texts
            return text
        return dict(zip(self.input_values(task_input), texts, strict=True))

    def placeholder_input(self) -> TaskInput:
        """A task input that shows where each text goes: `{field}` per field, `{user}` for a
        messages task's turn."""
        if self.format is TaskFormat.MESSAGES:
            return [{"role": "user", "content": "{user}"}]
        return {name: f"{{{name}}}" for name in self.input_fields}

    # --- identity --------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """The spec as its JSON file holds it (defaults written out)."""
        document = asdict(self)
        document.pop("placeholders")
        document["labels"] = list(self.labels)
        return {k: (str(v) if isinstance(v, enum.Enum) else v) for k, v in document.items()}

    def canonical_json(self) -> str:
        return json.dumps(self.document(), sort_keys=True, ensure_ascii=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def check_turns(task_input: TaskInput) -> list[Message]:
    if (
        not isinstance(task_input, list)
        or not task_input
        or not all(
            isinstance(t, dict)
            and set(t) == {"role", "content"}
            and t["role"] in ROLES
            and isinstance(t["content"], str)
            for t in task_input
        )
    ):
        raise TaskSpecError(
            "a messages task's input is a list of {role, content} turns (roles: "
            + ", ".join(ROLES)
            + ")"
        )
    if any(t["role"] == "system" for t in task_input[1:]):
        raise TaskSpecError("a system turn may only come first")
    dialogue = [t["role"] for t in task_input if t["role"] != "system"]
    if dialogue[:1] != ["user"] or any(a == b for a, b in itertools.pairwise(dialogue)):
        raise TaskSpecError(
            "the turns after the system prompt alternate user and assistant, starting with the "
            "user (as chat templates require)"
        )
    if dialogue[-1] != "user":
        raise TaskSpecError("a messages task's input ends with the user's turn, which it answers")
    if any(not t["content"].strip() for t in task_input):
        raise TaskSpecError("a turn is empty")
    return task_input


def _text_field(
    fields: dict[str, Any], name: str, clean: Callable[[str], str], fix: str
) -> str | InvalidRecord:
    if fields.get(name) is None:
        present = ", ".join(sorted(map(str, fields))) or "none"
        return InvalidRecord(
            "missing_field", f'field "{name}" is missing (fields present: {present}); {fix}'
        )
    return _checked_text(fields[name], f'field "{name}"', clean)


def _checked_text(value: Any, where: str, clean: Callable[[str], str]) -> str | InvalidRecord:
    """A record's text, cleaned, or why it is none: not text, no character, or empty."""
    if not isinstance(value, str):
        return InvalidRecord("not_text", f"{where} must be text, got {type(value).__name__}")
    try:
        text = clean(value)
    except InvalidTextError as err:
        return InvalidRecord(err.reason, f"{where} {err}")
    if not text:
        return InvalidRecord("empty_field", f"{where} is empty")
    return text


# --- reading and checking a spec -------------------------------------------------------------

KEYS = {
    "name",
    "format",
    "metric",
    "template",
    "target_field",
    "system",
    "labels",
    "max_new_tokens",
    "answer_cue",
    "description",
}


def parse_task_spec(document: Any, source: str) -> TaskSpec:
    """A checked spec from its JSON document; `source` names it in every error."""

    def fail(message: str) -> TaskSpecError:
        return TaskSpecError(f"{source}: {message}")

    if not isinstance(document, dict):
        raise fail(f"a task spec is a JSON object, got {type(document).__name__}")
    unknown = sorted(set(document) - KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; a task spec holds {', '.join(sorted(KEYS))}")
    for key in ("name", "format"):
        if key not in document:
            raise fail(f"missing key {key!r}")
    for key in KEYS - {"labels", "max_new_tokens"}:
        if key in document and not isinstance(document[key], str):
            raise fail(f"{key!r} must be text, got {type(document[key]).__name__}")
    name = document["name"]
    if name == "base" or not TASK_NAME.fullmatch(name):
        raise fail(
            f"name {name!r}: use lower-case letters, digits and single hyphens, at most 32 "
            "characters, not 'base' (it names the base model's component)"
        )
    format_ = _choice(TaskFormat, document["format"], "format", fail)
    metric = _choice(Metric, document.get("metric", Metric.ROUGE_L), "metric", fail)
    template = document.get("template", "")
    placeholders = _placeholders(template, fail) if template else ()
    target_field = document.get("target_field", "")
    if format_ is TaskFormat.FIELDS:
        if not template:
            raise fail('a fields task needs a template, e.g. "Summarize:\\n\\n{dialogue}"')
        if not placeholders:
            raise fail(
                f"template {template!r} names no field: put the data's fields in it as {{field}}"
            )
        if not target_field:
            raise fail("a fields task needs target_field: the field holding the answer")
        if target_field in placeholders:
            raise fail(f"target_field {target_field!r} is also in the template: it would leak")
    elif format_ is TaskFormat.PROMPT_COMPLETION:
        if template and placeholders != ("prompt",):
            raise fail(
                f"a prompt_completion template names {{prompt}} and nothing else, got "
                f"{list(placeholders) or 'no field'}"
            )
        placeholders = ("prompt",)
        if target_field:
            raise fail("target_field is for fields tasks; prompt_completion's is `completion`")
    else:
        if template or target_field:
            raise fail(
                "a messages task takes no template or target_field: its turns are its prompt"
            )
    labels = document.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels):
        raise fail("labels must be a list of non-empty texts")
    if len({label.casefold() for label in labels}) != len(labels):
        raise fail("labels repeat (labels are matched without regard to case)")
    odd = [x for x in labels if x != " ".join(x.split()) or x.endswith(".") or x == OTHER_LABEL]
    if odd:
        raise fail(
            f"label {odd[0]!r}: labels are single-spaced, end in no full stop and are not "
            f"{OTHER_LABEL!r} (answers are compared that way)"
        )
    if metric is Metric.LABEL_ACCURACY and len(labels) < 2:
        raise fail("label_accuracy needs labels: the list of allowed answers (two or more)")
    if labels and metric is not Metric.LABEL_ACCURACY:
        raise fail("labels are for the label_accuracy metric; drop them or set that metric")
    for key in ("system", "template", "answer_cue"):
        spelled = CONTROL_TOKEN_SPELLINGS.search(document.get(key, ""))
        if spelled:
            raise fail(
                f"{key} spells the control token {spelled.group()!r}: only the tokenizer's chat "
                "template writes control tokens"
            )
    if document.get("system") and not document["system"].strip():
        raise fail("system is blank: drop it or say something")
    max_new_tokens = document.get("max_new_tokens", 48)
    if (
        not isinstance(max_new_tokens, int)
        or isinstance(max_new_tokens, bool)
        or not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT
    ):
        raise fail(f"max_new_tokens must be a whole number in 1..{MAX_NEW_TOKENS_LIMIT}")
    return TaskSpec(
        name=name,
        format=format_,
        metric=metric,
        template=template,
        target_field=target_field,
        system=document.get("system", ""),
        labels=tuple(labels),
        max_new_tokens=max_new_tokens,
        answer_cue=document.get("answer_cue", DEFAULT_ANSWER_CUE),
        description=document.get("description", ""),
        placeholders=placeholders,
    )


def _choice(kind: type[enum.StrEnum], value: Any, key: str, fail: Callable) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise fail(f"{key} {value!r} is not one of {', '.join(m.value for m in kind)}") from None


def _placeholders(template: str, fail: Callable) -> tuple[str, ...]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise fail(
            f"template {template!r}: {err} (write a literal brace as {{{{ or }}}})"
        ) from None
    names: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise fail(
                f"template placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}: name a field, as {{field}}"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def load_task_spec(path: str | Path) -> TaskSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskSpecError(f"{path}: no such task spec") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TaskSpecError(f"{path}: cannot read it ({err})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise TaskSpecError(
            f"{path} line {err.lineno}: malformed JSON ({err.msg} at column {err.colno})"
        ) from None
    return parse_task_spec(document, str(path))


def shipped_tasks() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in SPECS_DIR.glob("*.json")))


def resolve_task_spec(reference: str | Path) -> TaskSpec:
    """A spec by file path, or by the name of a task the project ships."""
    if str(reference) in shipped_tasks():
        return load_task_spec(SPECS_DIR / f"{reference}.json")
    path = Path(reference)
    if path.suffix != ".json" and not path.exists():
        raise TaskSpecError(
            f"{reference}: neither a task spec file nor a shipped task "
            f"({', '.join(shipped_tasks())})"
        )
    return load_task_spec(path)


def split_task(directory: str | Path) -> TaskSpec:
    """The task of a preprocessed split folder: its task.json, or, for a folder that holds none
    (written by hand), the task the project ships by default."""
    directory = Path(directory)
    folder = directory.parent if directory.is_file() else directory
    path = folder / TASK_SPEC_FILE
    return load_task_spec(path if path.is_file() else SPECS_DIR / f"{DEFAULT_TASK}.json")


def input_key(task_input: TaskInput) -> str:
    """One text per task input, for deduplicating: the text itself, or the canonical JSON of
    several."""
    if isinstance(task_input, str):
        return task_input
    return json.dumps(task_input, sort_keys=True, ensure_ascii=False)


def split_key(task_input: TaskInput) -> str:
    """What keeps examples in one split: a conversation's last user turn (the message answered:
    the same message after another greeting is the same test question), else the input."""
    if isinstance(task_input, list):
        return task_input[-1]["content"]
    return input_key(task_input)


# --- what an endpoint is sent ------------------------------------------------------------------

# Generic spellings of chat control tokens (ChatML, Llama, Mistral, Gemma): a request holding one
# is refused, since an LMI endpoint would read it as the control token training read as text.
CONTROL_TOKEN_SPELLINGS = re.compile(
    r"<\|[a-z_]{2,32}\|>|</?s>|\[/?INST\]|<start_of_turn>|<end_of_turn>|<\|[a-z_]+_id\|>"
)


def task_input_from_text(task: TaskSpec, text: str) -> TaskInput:
    """A client's raw text as the task's input: the one field of its template, its prompt, or
    a messages task's user turn."""
    if task.format is TaskFormat.MESSAGES:
        return [{"role": "user", "content": text}]
    task.input_values(text)  # refuses a task of several fields
    return text


def chat_request(task: TaskSpec, task_input: TaskInput, max_new_tokens: int = 0) -> dict[str, Any]:
    """The one request body every endpoint is sent (the local server's and LMI's chat-completions
    schema): the task's messages, as training and evaluation rendered them, and greedy decoding
    as evaluation scored it. Raw text never reaches a model without its task's template."""
    if not 0 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
        raise TaskSpecError(f"max_new_tokens must be in 1..{MAX_NEW_TOKENS_LIMIT} (0: the task's)")
    messages = task.messages(task_input)
    for turn in messages:
        spelled = CONTROL_TOKEN_SPELLINGS.search(turn["content"])
        if spelled:
            raise TaskSpecError(
                f"the {turn['role']} turn spells the control token {spelled.group()!r}; an "
                "endpoint would read it as one (training read it as text): remove it"
            )
    return {
        "messages": messages,
        "max_tokens": max_new_tokens or task.max_new_tokens,
        "temperature": 0.0,
    }
