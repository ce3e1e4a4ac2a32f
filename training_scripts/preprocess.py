"""Validate, normalize, deduplicate and split a task's dataset.

    python training_scripts/preprocess.py --input data/sample/dialogues.jsonl --output-dir runs/prep

The task spec (tasks.py; `--task-spec`, else a `task.json` in the input folder, else the shipped
dialogue-summary task) says what a record holds; each split folder gets a copy beside its file.

Reads JSONL, CSV or Parquet files (a file or a folder of them), or a Hugging Face dataset
(`--input hf:knkarthick/dialogsum`, cloud runs with internet). Writes
`<output-dir>/{train,validation,test}/data.jsonl` with records `{"id", "input", "target",
"source"}` (`input`: the task input, see tasks.py) and `<output-dir>/manifest.json`, which accounts for every input record:
records in = records out (all splits) + records dropped (per reason).

Strict by default: the first malformed record stops the run with an error naming the file,
the line and the field. `--skip-invalid` skips and counts malformed records instead.
Exact duplicates (same normalized input and target) are always dropped and counted.
Inputs longer than `--max-input-tokens` are cut at a token boundary and counted.
The split is a pure function of the records and the seed, whatever their input order, and a
dialogue that appears with several summaries never straddles two splits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# isort: off
if __package__:  # imported as part of the training_scripts package (pipeline, tests, benchmarks)
    from . import logs  # first: it quiets bitsandbytes' import-time warning
    from . import contracts, job_environment, prompts, readers, tasks
else:  # run as `python preprocess.py`, as in the SageMaker job: sibling modules are top-level
    import logs  # first, as above
    import contracts
    import job_environment
    import prompts
    import readers
    import tasks
# isort: on


logger = logging.getLogger("preprocess")
DROP_REASONS = (
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "extra_cells",
    "missing_field",
    "not_text",
    "empty_field",
    "unknown_label",
    "duplicate",
)


@dataclass
class PreprocessArguments:
    input: str = job_environment.sagemaker_path_field(
        "/opt/ml/processing/input/data",
        "data/sample/dialogues.jsonl",
        "A .jsonl/.csv/.parquet file, a folder of them, or hf:<dataset id>.",
    )
    output_dir: str = job_environment.sagemaker_path_field(
        "/opt/ml/processing/output",
        "runs/local/preprocess",
        "Where the splits and manifest.json are written.",
    )
    task_spec: str = field(
        default="",
        metadata={
            "help": "The task spec (a .json file or a shipped task's name); empty: the input "
            f"folder's {tasks.TASK_SPEC_FILE}, else {tasks.DEFAULT_TASK}."
        },
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of dialogues for validation."}
    )
    test_fraction: float = field(
        default=0.1, metadata={"help": "Share of dialogues for the test split."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the split; same seed, same split."})
    skip_invalid: bool = field(
        default=False,
        metadata={"help": "Skip and count malformed records instead of stopping at the first."},
    )
    max_input_tokens: int = field(
        default=768,
        metadata={"help": "Inputs longer than this are truncated (and counted in the manifest)."},
    )
    tokenizer: str = field(
        default="",
        metadata={
            "help": "Tokenizer (hub id or folder) that counts the token budget; empty counts whitespace-separated words."
        },
    )
    hf_split: str = field(default="train", metadata={"help": "Split to read from a hf: dataset."})
    task_name: str = field(
        default="",
        metadata={
            "help": "The task the run trains (the pipeline's Task parameter); data published "
            "for another task is refused. Empty: any."
        },
    )

    def __post_init__(self) -> None:
        for flag, value in (("--input", self.input), ("--output-dir", self.output_dir)):
            if not value.strip():
                # An empty path is the current folder: read all of it, or write over it.
                raise readers.DataError(f"{flag} is empty: name a file or folder")
        if self.max_input_tokens <= 0:
            raise readers.DataError(
                f"--max-input-tokens must be > 0, got {self.max_input_tokens}: it is the token "
                "budget every input is cut to"
            )


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    input: tasks.TaskInput
    target: str
    source: str

    @property
    def key(self) -> str:
        return tasks.split_key(self.input)


# --- validating and normalizing ------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Runs of spaces to collapse to one space. A run that already is one plain space is left out of
# the pattern: collapsing it changes nothing, and matching every gap between words would make
# `sub` build a piece per word (a 50 MB line took 15 times its size in memory).
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]{2,}|[\t\u00a0\u2000-\u200b\u3000]")


def normalize_text(text: str) -> str:
    """NFC, one space between words, no control characters, no blank lines; keeps line breaks,
    which separate the turns of a dialogue."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub(" ", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """A record's text as the task reads it (normalize_text), or InvalidTextError for one that is
    no text at all."""
    if _LONE_SURROGATE.search(value):
        raise tasks.InvalidTextError(
            "invalid_utf8",
            "holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is no character",
        )
    return normalize_text(value)


# --- truncation ----------------------------------------------------------------------------

_WORD = re.compile(r"\S+")


def truncate_words(text: str, max_words: int) -> str:
    for count, match in enumerate(_WORD.finditer(text), start=1):
        if count == max_words:
            return text[: match.end()]
    return text


def make_truncator(
    tokenizer_name: str, max_tokens: int
) -> tuple[Callable[[str], str], str, Callable[[str], bool]]:
    """How inputs are cut to the token budget, its name for the manifest, and which texts hold
    a control-token string (kept as text; train.py never encodes them as control tokens)."""
    if not tokenizer_name:
        return (
            (lambda text: truncate_words(text, max_tokens)),
            "whitespace",
            lambda text: bool(tasks.CONTROL_TOKEN_SPELLINGS.search(text)),
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise readers.DataError(
            f"--tokenizer {tokenizer_name}: cannot load it ({reason}); pass a model folder or "
            "hub id, or leave it empty to count words"
        ) from None
    return (
        (lambda text: prompts.truncate_words_to_tokens(tokenizer, text, max_tokens)),
        f"tokenizer:{tokenizer_name}",
        lambda text: prompts.holds_control_tokens(tokenizer, text),
    )


# --- splitting -----------------------------------------------------------------------------


def split_examples(
    examples: list[Example], *, seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, list[Example]]:
    """Deterministic for (examples as a set, seed): dialogues are ordered by a seeded hash of their
    text, so input order does not matter and one dialogue's records share a split."""
    if (
        not 0 <= validation_fraction < 1
        or not 0 <= test_fraction < 1
        or validation_fraction + test_fraction >= 1
    ):
        raise readers.DataError(
            "--validation-fraction and --test-fraction must be in [0, 1) and sum to less than 1"
        )
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.key, []).append(example)
    order = sorted(groups, key=lambda text: hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest())
    n = len(order)

    def share(fraction: float) -> int:
        # At least one dialogue for a requested split once there are enough to go round.
        return max(1, round(n * fraction)) if fraction > 0 and n >= 3 else round(n * fraction)

    n_test, n_validation = share(test_fraction), share(validation_fraction)
    cut = {
        "test": order[:n_test],
        "validation": order[n_test : n_test + n_validation],
        "train": order[n_test + n_validation :],
    }
    if not cut["train"]:
        raise readers.DataError(
            f"only {n} distinct dialogue(s): too few to split; add data or lower the fractions"
        )
    return {
        name: [
            ex for text in cut[name] for ex in sorted(groups[text], key=lambda e: (e.target, e.id))
        ]
        for name in contracts.SPLITS
    }


# --- the whole step ------------------------------------------------------------------------


def build_examples(
    items: Iterable[readers.Record | readers.Invalid],
    *,
    task: tasks.TaskSpec,
    skip_invalid: bool,
    truncate: Callable[[str], str],
    skip_option: str | None = "--skip-invalid",  # None where the caller offers no such option
) -> tuple[list[Example], Counter[str], int]:
    dropped: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    examples: list[Example] = []
    truncated = 0
    for item in items:
        outcome = (
            item if isinstance(item, readers.Invalid) else task.read_record(item.fields, clean_text)
        )
        if isinstance(outcome, tasks.InvalidRecord):
            outcome = readers.Invalid(item.location, outcome.reason, outcome.message)
        if isinstance(outcome, readers.Invalid):
            if not skip_invalid:
                raise readers.DataError(
                    f"{outcome.location}: {outcome.message}. Fix it ({readers.fix_hint(outcome.reason)})"
                    + (f" or pass {skip_option} to skip such records." if skip_option else ".")
                )
            dropped[outcome.reason] += 1
            continue
        assert isinstance(item, readers.Record)
        task_input, target = outcome
        # Duplicates as they would be trained on: two inputs that differ only past the token
        # budget are the same example once truncated. Every text of an input gets the budget.
        texts = task.texts(task_input)
        cut_texts = [truncate(text) for text in texts]
        cut = task.with_texts(task_input, cut_texts)
        key = (tasks.input_key(cut), target)
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        truncated += cut_texts != texts
        record_id = item.fields.get("id")
        examples.append(
            Example(
                id=str(record_id) if record_id not in (None, "") else item.location,
                input=cut,
                target=target,
                source=item.location,
            )
        )
    return examples, dropped, truncated


def task_of(args: PreprocessArguments) -> tuple[tasks.TaskSpec, str]:
    """The task the records are read by, and where its spec came from."""
    if args.task_spec:
        return tasks.resolve_task_spec(args.task_spec), args.task_spec
    beside = Path(args.input) / tasks.TASK_SPEC_FILE
    if not args.input.startswith(readers.HF_PREFIX) and beside.is_file():
        return tasks.load_task_spec(beside), str(beside)
    return tasks.resolve_task_spec(tasks.DEFAULT_TASK), f"shipped:{tasks.DEFAULT_TASK}"


def run(args: PreprocessArguments) -> dict[str, Any]:
    task, task_source = task_of(args)
    if args.task_name and args.task_name != task.name:
        # A run registers its adapter under its Task: data of another task must not train it.
        raise readers.DataError(
            f"the data is published for task {task.name} ({task_source}), but this run trains "
            f"task {args.task_name}; publish {args.task_name}'s data with its spec (peftops data "
            f"publish --task-spec ...) or run with Task={task.name}"
        )
    if args.input.startswith(readers.HF_PREFIX):
        inputs, items = readers.read_hub_dataset(
            args.input.removeprefix(readers.HF_PREFIX), args.hf_split
        )
    else:
        files = readers.discover_files(Path(args.input), outside=Path(args.output_dir))
        inputs, items = readers.read_files(files)

    truncate, counter, holds_control_tokens = make_truncator(args.tokenizer, args.max_input_tokens)
    examples, dropped, truncated = build_examples(
        items,
        task=task,
        skip_invalid=args.skip_invalid,
        truncate=truncate,
    )
    records_in = sum(entry.records for entry in inputs)
    if records_in == 0:
        raise readers.DataError(
            f"{args.input}: holds no records; check the path and that the files are not empty"
        )
    if not examples:
        raise readers.DataError(
            f"{args.input}: none of the {records_in} records is valid ({dict(dropped)}); check "
            f"that the records fit task {task.name}'s {task.format} format"
        )
    splits = split_examples(
        examples,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
    )

    records_out = {name: len(rows) for name, rows in splits.items()}
    dropped_all = {reason: dropped.get(reason, 0) for reason in DROP_REASONS}
    if records_in != sum(records_out.values()) + sum(dropped_all.values()):
        raise AssertionError(
            f"record accounting is off: {records_in} in, {records_out} out, {dropped_all} dropped"
        )
    manifest = {
        "inputs": [asdict(entry) for entry in inputs],
        "task": {"name": task.name, "sha256": task.sha256, "spec_source": task_source},
        "records_in": records_in,
        "records_out": records_out,
        "dropped": dropped_all,
        "truncated_inputs": truncated,
        # Records whose text spells a control token: trained on as text, counted for review.
        "records_with_control_tokens": sum(
            any(map(holds_control_tokens, [*task.texts(e.input), e.target])) for e in examples
        ),
        "max_input_tokens": args.max_input_tokens,
        "token_counter": counter,
        "seed": args.seed,
        "fractions": {"validation": args.validation_fraction, "test": args.test_fraction},
    }
    out = Path(args.output_dir)
    try:
        return write_outputs(out, splits, manifest, task)
    except OSError as err:
        raise readers.DataError(
            f"{out}: cannot write the splits there ({err.strerror}); point --output-dir at a "
            "writable folder with free space"
        ) from None


def write_outputs(
    out: Path, splits: dict[str, list[Example]], manifest: dict[str, Any], task: tasks.TaskSpec
) -> dict[str, Any]:
    """The splits, then the manifest that describes them. An earlier run's manifest goes first
    and each split file is replaced whole, so a run that fails halfway (a full disk) leaves no
    manifest beside files it does not describe."""
    (out / contracts.MANIFEST.file_name).unlink(missing_ok=True)
    split_info = {}
    for name, rows in splits.items():
        path = out / name / contracts.SPLIT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial")
        digest = hashlib.sha256()
        with staging.open("wb") as handle:  # one line at a time: no copy of the whole split
            for e in rows:
                line = (json.dumps(
                    {"id": e.id, contracts.INPUT_KEY: e.input, contracts.TARGET_KEY: e.target, "source": e.source},
                    ensure_ascii=False,
                ) + "\n").encode("utf-8")  # fmt: skip
                digest.update(line)
                handle.write(line)
        staging.replace(path)
        contracts.write_json_atomic(path.parent / tasks.TASK_SPEC_FILE, task.document())
        split_info[name] = {
            "file": f"{name}/{contracts.SPLIT_FILE}",
            "records": len(rows),
            "sha256": digest.hexdigest(),
        }
    return contracts.MANIFEST.write(out, {**manifest, "splits": split_info})


def main(argv: list[str] | None = None) -> int:
    logs.setup_logging()
    try:
        args = job_environment.parsed_arguments(PreprocessArguments, argv)
        job_environment.use_hub_token_from_secrets_manager()  # the tokenizer of a gated base model
        manifest = run(args)
    except (
        readers.DataError,
        tasks.TaskSpecError,
        job_environment.HubTokenError,
        job_environment.ArgumentsError,
    ) as err:
        logger.error("error: %s", err)
        return 2
    logger.info(
        "task %s: %s records in -> %s out, dropped %s, truncated %s; wrote %s",
        manifest["task"]["name"],
        manifest["records_in"],
        manifest["records_out"],
        {k: v for k, v in manifest["dropped"].items() if v},
        manifest["truncated_inputs"],
        args.output_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
