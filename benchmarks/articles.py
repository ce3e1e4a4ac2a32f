"""A second summarization dataset, unlike the bundled dialogues: short local-news articles and
their one-sentence highlights, under CNN/DailyMail's field names (`article`, `highlights`), with
the task spec that names them. Four kinds of story (a football match, a company's results, a
council vote, a transport disruption), each told in a shuffled order of sentences drawn from
several phrasings, with facts the highlight must carry (who, the figure, the outcome).

    python -m benchmarks.articles --out runs/bench/articles   # articles.jsonl + task.json

`make bench-quality` trains the smollm2 preset on it beside the bundled sample: a recipe that
only learns on the data it was tuned on shows here.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

DEFAULT_COUNT = 300
DEFAULT_SEED = 11

TASK_SPEC = {
    "name": "article-highlights",
    "description": "Summarize a local news article in one sentence.",
    "format": "fields",
    "template": "Summarize the following news article in one sentence.\n\n{article}",
    "target_field": "highlights",
    "metric": "rougeL",
    "max_new_tokens": 48,
}

TOWNS = ["Ashford", "Brampton", "Carlow", "Dunmore", "Elmstead", "Fairhaven", "Glenrock", "Hollis"]
CLUBS = ["Rovers", "Athletic", "United", "Wanderers", "Albion", "Harriers", "Town", "City"]
PLAYERS = ["Maya Ortiz", "Tom Byrne", "Sam Okafor", "Lena Novak", "Raj Mehta", "Chris Dunn",
           "Ana Silva", "Ben Hart", "Ivy Chen", "Omar Haddad"]  # fmt: skip
COMPANIES = ["Northwind Foods", "Keystone Tools", "Bluewater Ferries", "Pinecrest Dairy",
             "Copperline Cables", "Redfield Print", "Harbour Bakeries", "Summit Textiles"]  # fmt: skip
PRODUCTS = ["frozen meals", "garden tools", "crossings", "cheese", "cables", "packaging",
            "bread", "workwear"]  # fmt: skip
PROJECTS = ["a new cycle lane on the high street", "a 200-home estate by the river",
            "a four-day week for council staff", "closing the Mill Road library",
            "a car park charge for evenings", "rebuilding the leisure centre pool"]  # fmt: skip
LINES = ["the coastal line", "the number 12 bus route", "the valley line", "the ring road",
         "the harbour ferry", "the airport shuttle"]  # fmt: skip
CAUSES = ["a signal failure", "flooding near the depot", "a broken-down lorry",
          "strike action by drivers", "overnight storm damage", "a burst water main"]  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

Story = tuple[list[str], str]  # the article's sentences (first kept first), the highlight


def football(rng: random.Random) -> Story:
    home, away = rng.sample(TOWNS, 2)
    home_club, away_club = f"{home} {rng.choice(CLUBS)}", f"{away} {rng.choice(CLUBS)}"
    scorer, other = rng.sample(PLAYERS, 2)
    goals = rng.randint(2, 4)
    conceded = rng.randint(0, goals - 1)
    minute = rng.randint(70, 90)
    crowd = rng.randint(8, 60) * 100
    day = rng.choice(DAYS)
    place = rng.randint(1, 8)
    sentences = [
        rng.choice(
            [
                f"{home_club} beat {away_club} {goals}-{conceded} at home on {day}.",
                f"{home_club} took all three points against {away_club} on {day}, winning {goals}-{conceded}.",
            ]
        ),
        f"A crowd of {crowd:,} watched the match in {home}.",
        rng.choice(
            [
                f"{other} opened the scoring early in the first half.",
                f"The visitors held firm until {other} broke through before the break.",
            ]
        ),
        rng.choice(
            [
                f"{scorer} sealed the win in the {minute}th minute.",
                f"A goal from {scorer} in the {minute}th minute settled it.",
            ]
        ),
        f"The result lifts {home_club} to {ordinal(place)} in the table.",
        rng.choice(
            [
                "The manager praised the team's patience after the game.",
                "Both sides meet again in the cup next month.",
            ]
        ),
    ]
    highlight = rng.choice(
        [
            f"{home_club} beat {away_club} {goals}-{conceded}, with {scorer} scoring in the "
            f"{minute}th minute, to move {ordinal(place)} in the table.",
            f"{scorer}'s goal in the {minute}th minute helped {home_club} to a {goals}-{conceded} "
            f"home win over {away_club}.",
            f"{home_club} rise to {ordinal(place)} after a {goals}-{conceded} win against "
            f"{away_club} in front of {crowd:,} fans.",
        ]
    )
    return sentences, highlight


def results(rng: random.Random) -> Story:
    company, product = rng.choice(list(zip(COMPANIES, PRODUCTS, strict=True)))
    town = rng.choice(TOWNS)
    change = rng.randint(3, 28)
    up = rng.random() < 0.5
    revenue = rng.randint(12, 240)
    jobs = rng.randint(2, 15) * 10
    direction = "rose" if up else "fell"
    plan = (
        f"hire {jobs} more staff at its {town} site"
        if up
        else f"cut {jobs} jobs at its {town} site"
    )
    sentences = [
        f"{company}, the {town}-based maker of {product}, said its yearly sales {direction} {change}% "
        f"to {revenue} million pounds.",
        rng.choice(
            [
                "The chief executive blamed higher energy costs for a difficult spring."
                if not up
                else "The chief executive credited strong demand from supermarkets.",
                "Analysts had expected a smaller change.",
            ]
        ),
        f"The company will {plan} over the next year.",
        rng.choice(
            [
                "Its shares moved sharply in early trading.",
                "Unions said they would study the plans closely.",
            ]
        ),
        f"{company} employs about {jobs * 7} people in the region.",
    ]
    highlight = rng.choice(
        [
            f"Sales at {company} {direction} {change}% to {revenue} million pounds, and it will {plan}.",
            f"{company} will {plan} after a {change}% {'rise' if up else 'fall'} in yearly sales.",
            f"{town} firm {company} reports sales of {revenue} million pounds, "
            f"{'up' if up else 'down'} {change}%.",
        ]
    )
    return sentences, highlight


def council(rng: random.Random) -> Story:
    town = rng.choice(TOWNS)
    project = rng.choice(PROJECTS)
    votes_for = rng.randint(8, 30)
    votes_against = rng.randint(4, 30)
    passed = votes_for > votes_against
    day = rng.choice(DAYS)
    outcome = "approved" if passed else "rejected"
    sentences = [
        rng.choice(
            [
                f"{town} council {outcome} plans for {project} on {day} night.",
                f"After months of consultation, {town} councillors have {outcome} {project}.",
            ]
        ),
        f"Councillors voted {votes_for} to {votes_against} after a three-hour debate.",
        rng.choice(
            [
                "Residents packed the public gallery for the meeting.",
                "Several local businesses had written to oppose the scheme.",
            ]
        ),
        "Work is due to start in the spring."
        if passed
        else "Supporters said they would bring a revised plan next year.",
        rng.choice(
            [
                "The council leader called it a fair process.",
                "Opposition members asked for a review of the costs.",
            ]
        ),
    ]
    highlight = rng.choice(
        [
            f"{town} council {outcome} plans for {project} by {votes_for} votes to {votes_against}.",
            f"Councillors in {town} voted {votes_for}-{votes_against} "
            f"{'for' if passed else 'against'} {project}.",
            f"Plans for {project} in {town} were {outcome} after a three-hour debate.",
        ]
    )
    return sentences, highlight


def disruption(rng: random.Random) -> Story:
    line = rng.choice(LINES)
    cause = rng.choice(CAUSES)
    town = rng.choice(TOWNS)
    hours = rng.randint(2, 12)
    day = rng.choice(DAYS)
    sentences = [
        rng.choice(
            [
                f"Services on {line} were suspended for {hours} hours on {day} after {cause}.",
                f"Travellers faced a day of delays on {day} when {cause} closed {line} "
                f"for {hours} hours.",
            ]
        ),
        f"Passengers in {town} faced long queues for replacement buses.",
        rng.choice(
            [
                "The operator apologised and promised refunds for delayed journeys.",
                "Engineers worked through the afternoon to reopen the route.",
            ]
        ),
        rng.choice(
            [
                "Normal services resumed by the evening rush hour.",
                "Some services were still running late into the night.",
            ]
        ),
    ]
    highlight = rng.choice(
        [
            f"{cause.capitalize()} suspended {line} for {hours} hours, stranding passengers in {town}.",
            f"Passengers in {town} were left waiting after {cause} shut {line} on {day}.",
            f"{line.capitalize()} was closed for {hours} hours on {day} because of {cause}.",
        ]
    )
    return sentences, highlight


KINDS: tuple[Callable[[random.Random], Story], ...] = (football, results, council, disruption)


def ordinal(n: int) -> str:
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n if n < 20 else n % 10, 'th') }"


def article(rng: random.Random) -> dict[str, str]:
    sentences, highlight = rng.choice(KINDS)(rng)
    rest = sentences[1:]
    rng.shuffle(rest)  # the lead stays first, as in a news story; the rest in any order
    return {"article": " ".join([sentences[0], *rest]), "highlights": highlight}


def generate(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"id": f"article-{i:04d}", **article(rng)} for i in range(count)]


def write(folder: Path, count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> tuple[Path, Path]:
    """The dataset and its task spec in `folder`: (articles.jsonl, task.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    data, spec = folder / "articles.jsonl", folder / "task.json"
    lines = (json.dumps(record, ensure_ascii=False) + "\n" for record in generate(count, seed))
    data.write_text("".join(lines), encoding="utf-8")
    spec.write_text(json.dumps(TASK_SPEC, indent=2) + "\n", encoding="utf-8")
    return data, spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/articles"))
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    data, spec = write(args.out, args.count, args.seed)
    print(f"wrote {data} ({args.count} records) and {spec}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
