"""A seeded generator of original dialogue-summary pairs in the style of DialogSum.

The project runs offline, so it cannot download DialogSum. This generator writes a dataset
with the same shape (`dialogue` with `#Person1#:`/`#Person2#:` turns, a one- or
two-sentence `summary`, a `topic`) across several scenario kinds. Every scenario draws its
facts (who, what, when, how much, outcome) from slots and renders each turn from several
paraphrases, with optional small talk, so dialogues vary in wording and length while the
summary must compress them to the facts that matter.

    python -m pipelines.sample_data --out data/sample/dialogues.jsonl --count 620 --seed 13

The committed sample (`data/sample/dialogues.jsonl`) is exactly this command's output; a
test regenerates it and compares bytes.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

P1 = "#Person1#"
P2 = "#Person2#"

DEFAULT_COUNT = 620
DEFAULT_SEED = 13
SAMPLE_PATH = Path(__file__).resolve().parent.parent / "data" / "sample" / "dialogues.jsonl"


@dataclass(frozen=True)
class Example:
    dialogue: str
    summary: str
    topic: str


def _pick(rng: random.Random, options: list[str] | tuple[str, ...]) -> str:
    return rng.choice(list(options))


def _turns(lines: list[tuple[str, str]]) -> str:
    return "\n".join(f"{speaker}: {text}" for speaker, text in lines)


def _small_talk(rng: random.Random, speaker_a: str, speaker_b: str) -> list[tuple[str, str]]:
    """Zero to two turns of filler that a good summary must leave out."""
    pairs = [
        ("Sorry, it's a bit noisy here today.", "No problem, I can hear you fine."),
        ("Lovely weather we're having, isn't it?", "Yes, finally some sun after all that rain."),
        (
            "Thanks for waiting, it has been a busy morning.",
            "That's all right, I'm not in a hurry.",
        ),
        ("Can you hold on a second? My other line is ringing.", "Sure, take your time."),
        ("I hope I'm not calling too early.", "Not at all, we open at eight."),
        ("Sorry, I had to look for my glasses.", "Ha, that happens to me every day."),
    ]
    if rng.random() < 0.45:
        return []
    a, b = _pick(rng, [f"{x}|{y}" for x, y in pairs]).split("|")
    return [(speaker_a, a), (speaker_b, b)]


# --- scenarios -----------------------------------------------------------------------------
# Each returns (turns, summary). Person1 is the customer/caller, Person2 the other party,
# unless the scenario says otherwise.

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIMES = ("6 pm", "6:30 pm", "7 pm", "7:30 pm", "8 pm", "8:30 pm")


def restaurant(rng: random.Random) -> tuple[list[tuple[str, str]], str, str]:
    size = rng.randint(2, 9)
    day = _pick(rng, DAYS)
    time = _pick(rng, TIMES)
    occasion = _pick(
        rng, ("a birthday", "an anniversary", "a business dinner", "a farewell party", "")
    )
    request = _pick(
        rng,
        (
            "a table by the window",
            "a quiet corner",
            "a high chair for a baby",
            "vegetarian options",
            "",
        ),
    )
    full = rng.random() < 0.35
    other_time = _pick(rng, [t for t in TIMES if t != time])
    t: list[tuple[str, str]] = [
        (
            P2,
            _pick(
                rng,
                (
                    "Good afternoon, Bella Vista, how can I help you?",
                    "Hello, this is the Golden Fork. What can I do for you?",
                    "Thank you for calling Harbor Grill.",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    f"Hi, I'd like to book a table for {size} on {day}.",
                    f"Hello. Could I reserve a table for {size} people this {day}?",
                    f"I want to make a reservation for {day}, {size} of us.",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (
                    "Certainly. What time would you like?",
                    "Of course. For what time?",
                    "Let me check. What time were you thinking of?",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    f"Around {time}, if possible.",
                    f"{time} would be ideal.",
                    f"We were hoping for {time}.",
                ),
            ),
        ),
    ]
    t += _small_talk(rng, P2, P1)
    if full:
        t += [
            (
                P2,
                _pick(
                    rng,
                    (
                        f"I'm afraid {time} is fully booked. I could offer you {other_time} instead.",
                        f"Sorry, we have nothing free at {time}. Would {other_time} work?",
                    ),
                ),
            ),
            (
                P1,
                _pick(
                    rng,
                    (
                        f"Hmm, {other_time} is fine, I suppose.",
                        f"OK, let's do {other_time} then.",
                        f"{other_time} works for us.",
                    ),
                ),
            ),
        ]
        final_time = other_time
    else:
        t.append(
            (
                P2,
                _pick(
                    rng,
                    (
                        f"Yes, {time} is available.",
                        f"Good news, we have a table at {time}.",
                        f"{time} is fine.",
                    ),
                ),
            )
        )
        final_time = time
    if occasion:
        t.append(
            (
                P1,
                _pick(
                    rng,
                    (
                        f"It's for {occasion}, by the way.",
                        f"We're celebrating {occasion}.",
                        f"It's {occasion}, so we'd like it to be special.",
                    ),
                ),
            )
        )
        t.append(
            (
                P2,
                _pick(
                    rng,
                    (
                        "How nice! I'll make a note of it.",
                        "Wonderful, I'll let the staff know.",
                        "Congratulations! I'll note that down.",
                    ),
                ),
            )
        )
    if request:
        t.append(
            (
                P1,
                _pick(
                    rng,
                    (
                        f"Could we have {request}?",
                        f"Is it possible to get {request}?",
                        f"One more thing: we'd need {request}.",
                    ),
                ),
            )
        )
        t.append(
            (
                P2,
                _pick(
                    rng,
                    (
                        "No problem at all.",
                        "Sure, I've added that to the booking.",
                        "We can arrange that.",
                    ),
                ),
            )
        )
    t.append(
        (
            P2,
            _pick(
                rng,
                (
                    "May I have a name for the booking?",
                    "Under what name, please?",
                    "What name should I put it under?",
                ),
            ),
        )
    )
    t.append(
        (
            P1,
            _pick(
                rng, ("Under Lee, please.", "It's Garcia.", "Put it under Novak.", "Patel, please.")
            ),
        )
    )
    t.append(
        (
            P2,
            _pick(
                rng,
                (
                    f"Great, see you on {day} at {final_time}.",
                    f"You're all set for {day} at {final_time}.",
                    "All done. Thank you for calling.",
                ),
            ),
        )
    )
    extras = []
    if occasion:
        extras.append(f"for {occasion}")
    summary = f"{P1} books a table for {size} at {final_time} on {day}"
    summary += (" " + extras[0] if extras else "") + "."
    if full:
        summary = (
            f"{P1} wants a table for {size} at {time} on {day}, but it's full, so {P1} books {other_time} instead"
            + (" " + extras[0] if extras else "")
            + "."
        )
    if request:
        summary += f" {P1} also asks for {request}."
    return t, summary, "restaurant reservation"


DEVICES = {
    "laptop": ("won't turn on", "keeps freezing", "overheats"),
    "router": ("drops the wifi connection", "has a blinking red light", "is very slow"),
    "printer": ("keeps jamming", "prints blank pages", "isn't recognised by the computer"),
    "phone": ("battery drains quickly", "screen is cracked", "won't charge"),
}
FIXES = {
    "won't turn on": "hold the power button for thirty seconds",
    "keeps freezing": "install the latest system update",
    "overheats": "clean the air vents",
    "drops the wifi connection": "update the firmware",
    "has a blinking red light": "unplug it for a minute and plug it back in",
    "is very slow": "change the wifi channel",
    "keeps jamming": "remove the torn paper from the tray",
    "prints blank pages": "replace the ink cartridge",
    "isn't recognised by the computer": "reinstall the driver",
    "battery drains quickly": "turn off background app refresh",
    "screen is cracked": "bring it to a repair shop",
    "won't charge": "try a different charging cable",
}


def tech_support(rng: random.Random) -> tuple[list[tuple[str, str]], str, str]:
    device = _pick(rng, list(DEVICES))
    problem = _pick(rng, DEVICES[device])
    fix = FIXES[problem]
    works = rng.random() < 0.6
    visit_day = _pick(rng, DAYS)
    months = rng.randint(2, 30)
    t: list[tuple[str, str]] = [
        (
            P2,
            _pick(
                rng,
                (
                    "Technical support, how can I help?",
                    "Hi, you've reached customer support.",
                    "Help desk, what seems to be the problem?",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    f"Hi, my {device} {problem}.",
                    f"I'm having trouble: my {device} {problem}.",
                    f"Hello, I need help. The {device} {problem} since yesterday.",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (
                    f"I'm sorry to hear that. How long have you had the {device}?",
                    f"Let's sort that out. How old is the {device}?",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    f"About {months} months.",
                    f"I bought it {months} months ago.",
                    f"Roughly {months} months, I think.",
                ),
            ),
        ),
    ]
    t += _small_talk(rng, P1, P2)
    t += [
        (
            P2,
            _pick(
                rng,
                (
                    f"Please {fix} and tell me what happens.",
                    f"Could you {fix}? That usually solves it.",
                    f"First, let's {fix}.",
                ),
            ),
        ),
        (P1, _pick(rng, ("OK, give me a moment.", "Alright, doing it now.", "Sure, one second."))),
    ]
    if works:
        t += [
            (
                P1,
                _pick(
                    rng,
                    (
                        "Oh, it works now!",
                        "That did it, it's working again.",
                        "Great, the problem is gone.",
                    ),
                ),
            ),
            (
                P2,
                _pick(
                    rng,
                    (
                        "Glad to hear it. Anything else?",
                        "Excellent. Call us if it happens again.",
                        "Perfect. Have a nice day.",
                    ),
                ),
            ),
        ]
        summary = f"{P1}'s {device} {problem}. {P2} tells {P1} to {fix}, which fixes it."
    else:
        t += [
            (
                P1,
                _pick(
                    rng,
                    (
                        "No, it's still the same.",
                        "Nothing changed, unfortunately.",
                        "It didn't help.",
                    ),
                ),
            ),
            (
                P2,
                _pick(
                    rng,
                    (
                        f"Then I'll book a technician visit for {visit_day}.",
                        f"In that case a technician will come on {visit_day}.",
                        f"I'll open a ticket and send someone on {visit_day}.",
                    ),
                ),
            ),
            (P1, _pick(rng, ("Fine, thank you.", "OK, I'll be home.", "That works, thanks."))),
        ]
        summary = f"{P1}'s {device} {problem}. {P2}'s suggestion to {fix} doesn't help, so a technician will visit on {visit_day}."
    return t, summary, "technical support"


SYMPTOMS = (
    "a sore throat",
    "a headache",
    "back pain",
    "a cough",
    "a rash",
    "trouble sleeping",
    "a sprained ankle",
)
ADVICE = {
    "rest": "rest for a few days",
    "medicine": "take the prescribed medicine twice a day",
    "test": "get a blood test",
    "xray": "get an X-ray",
    "exercise": "do gentle stretching exercises",
}


def doctor(rng: random.Random) -> tuple[list[tuple[str, str]], str, str]:
    symptom = _pick(rng, SYMPTOMS)
    days = rng.randint(2, 14)
    advice_key = _pick(rng, list(ADVICE))
    advice = ADVICE[advice_key]
    follow_up = _pick(rng, ("next week", "in two weeks", "in a month", "if it gets worse"))
    fever = rng.random() < 0.4
    t: list[tuple[str, str]] = [
        (
            P2,
            _pick(
                rng,
                (
                    "Come in and sit down. What brings you here today?",
                    "Good morning. How can I help you?",
                    "Hello, what seems to be the trouble?",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    f"I've had {symptom} for {days} days.",
                    f"Doctor, I have {symptom}. It started {days} days ago.",
                    f"It's {symptom}. It's been {days} days now.",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (
                    "Do you have a fever?",
                    "Any fever or chills?",
                    "Have you taken your temperature?",
                ),
            ),
        ),
        (
            P1,
            "Yes, a slight one."
            if fever
            else _pick(
                rng, ("No, no fever.", "I don't think so.", "No, my temperature is normal.")
            ),
        ),
    ]
    t += _small_talk(rng, P2, P1)
    t += [
        (P2, _pick(rng, ("Let me have a look.", "I'll examine you now.", "Let me check."))),
        (
            P2,
            _pick(
                rng,
                (
                    f"I'd like you to {advice}.",
                    f"My advice is to {advice}.",
                    f"You should {advice}.",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    "Should I come back?",
                    "Do I need another appointment?",
                    "When should I see you again?",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (
                    f"Come back {follow_up}.",
                    f"Let's see you {follow_up}.",
                    f"Book a follow-up {follow_up}.",
                ),
            ),
        ),
    ]
    fever_text = " and a slight fever" if fever else ""
    summary = f"{P1} has had {symptom}{fever_text} for {days} days. The doctor tells {P1} to {advice} and come back {follow_up}."
    return t, summary, "doctor visit"


def apartment(rng: random.Random) -> tuple[list[tuple[str, str]], str, str]:
    rooms = rng.randint(1, 4)
    rent = rng.randrange(900, 3200, 50)
    feature = _pick(
        rng,
        (
            "close to the subway",
            "next to a park",
            "in a quiet street",
            "near the university",
            "above a bakery",
        ),
    )
    pets = rng.random() < 0.5
    has_pet = rng.random() < 0.5
    takes_it = rng.random() < 0.55
    t: list[tuple[str, str]] = [
        (
            P1,
            _pick(
                rng,
                (
                    "Hi, I'm calling about the apartment you advertised.",
                    "Hello, is the flat on your website still available?",
                    "I saw your ad for an apartment for rent.",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (
                    f"Yes, it is. It has {rooms} bedroom{'s' if rooms > 1 else ''}.",
                    f"It is. It's a {rooms}-bedroom place.",
                ),
            ),
        ),
        (P1, _pick(rng, ("How much is the rent?", "What's the monthly rent?", "And the rent?"))),
        (
            P2,
            _pick(
                rng,
                (
                    f"{rent} dollars a month, utilities not included.",
                    f"It's {rent} a month.",
                    f"The rent is {rent} dollars per month.",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng, ("What's the area like?", "Is the neighbourhood nice?", "Where exactly is it?")
            ),
        ),
        (P2, _pick(rng, (f"It's {feature}.", f"Very convenient, it's {feature}."))),
    ]
    t += _small_talk(rng, P1, P2)
    if has_pet:
        t.append((P1, _pick(rng, ("Are pets allowed? I have a dog.", "I have a cat. Is that OK?"))))
        t.append((P2, "Yes, pets are fine." if pets else "Sorry, no pets are allowed."))
    if has_pet and not pets:
        takes_it = False
    t.append(
        (
            P1,
            "I'll take it. When can I sign the lease?"
            if takes_it
            else _pick(
                rng,
                (
                    "I need to think about it.",
                    "I'll keep looking, thanks.",
                    "That doesn't work for me, thank you anyway.",
                ),
            ),
        )
    )
    t.append((P2, "How about tomorrow morning?" if takes_it else "All right, let me know."))
    summary = (
        f"{P1} asks about a {rooms}-bedroom apartment {feature} that costs {rent} dollars a month."
    )
    if has_pet:
        summary += (
            " Pets are allowed." if pets else f" Pets are not allowed, so {P1} won't rent it."
        )
    if takes_it:
        summary += f" {P1} decides to rent it and will sign the lease tomorrow."
    elif not (has_pet and not pets):
        summary += f" {P1} doesn't decide yet."
    return t, summary, "apartment rental"


POSITIONS = (
    "sales assistant",
    "software developer",
    "accountant",
    "nurse",
    "graphic designer",
    "chef",
    "teacher",
)
STRENGTHS = (
    "working in a team",
    "solving problems",
    "staying calm under pressure",
    "learning quickly",
    "organising my time",
)


def job_interview(rng: random.Random) -> tuple[list[tuple[str, str]], str, str]:
    position = _pick(rng, POSITIONS)
    years = rng.randint(1, 12)
    strength = _pick(rng, STRENGTHS)
    start = _pick(rng, ("next month", "in two weeks", "immediately", "in September"))
    second_round = rng.random() < 0.5
    t: list[tuple[str, str]] = [
        (
            P1,
            _pick(
                rng,
                (
                    f"Thank you for coming. You applied for the {position} position, right?",
                    f"Welcome. So you're interested in the {position} job?",
                ),
            ),
        ),
        (
            P2,
            _pick(rng, ("Yes, that's right.", "Yes, I am. Thank you for inviting me.", "Correct.")),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    "Tell me about your experience.",
                    "What experience do you have?",
                    "How long have you worked in this field?",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (
                    f"I've worked as a {position} for {years} years.",
                    f"{years} years, most recently at a small company.",
                    f"About {years} years in total.",
                ),
            ),
        ),
    ]
    t += _small_talk(rng, P1, P2)
    t += [
        (
            P1,
            _pick(
                rng,
                (
                    "What would you say is your main strength?",
                    "What are you good at?",
                    "Why should we hire you?",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (f"I'm good at {strength}.", f"My strength is {strength}.", f"I'd say {strength}."),
            ),
        ),
        (P1, _pick(rng, ("When could you start?", "How soon are you available?"))),
        (P2, _pick(rng, (f"I could start {start}.", f"{start[0].upper() + start[1:]}."))),
        (
            P1,
            "We'd like to invite you to a second interview with the manager."
            if second_round
            else _pick(
                rng,
                ("Thank you, we'll call you by Friday.", "Thanks, we'll be in touch next week."),
            ),
        ),
    ]
    summary = f"{P2} interviews for the {position} job, has {years} years of experience, says {P2}'s strength is {strength}, and can start {start}."
    summary += (
        f" {P1} invites {P2} to a second interview."
        if second_round
        else f" {P1} will contact {P2} later."
    )
    return t, summary, "job interview"


ITEMS = (
    "a jacket",
    "a pair of shoes",
    "a blender",
    "a lamp",
    "a backpack",
    "headphones",
    "a coffee maker",
)
REASONS = (
    "it's the wrong size",
    "it arrived broken",
    "it came two weeks late",
    "the colour is different from the picture",
    "it stopped working",
)


def product_return(rng: random.Random) -> tuple[list[tuple[str, str]], str, str]:
    item = _pick(rng, ITEMS)
    reason = _pick(rng, REASONS)
    receipt = rng.random() < 0.7
    resolution = _pick(rng, ("a refund", "an exchange")) if receipt else "store credit"
    t: list[tuple[str, str]] = [
        (
            P2,
            _pick(
                rng,
                (
                    "Hi, how can I help you?",
                    "Next, please. What can I do for you?",
                    "Good morning, customer service.",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    f"I'd like to return {item}.",
                    f"I bought {item} here and want to bring it back.",
                    f"I need to return {item} I bought last week.",
                ),
            ),
        ),
        (
            P2,
            _pick(rng, ("What's wrong with it?", "May I ask why?", "Is there a problem with it?")),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    f"Well, {reason}.",
                    f"Unfortunately {reason}.",
                    f"{reason[0].upper() + reason[1:]}.",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (
                    "Do you have the receipt?",
                    "Have you got your receipt?",
                    "Could I see the receipt?",
                ),
            ),
        ),
        (
            P1,
            "Yes, here it is."
            if receipt
            else _pick(rng, ("I'm afraid I lost it.", "No, I threw it away.", "I can't find it.")),
        ),
    ]
    t += _small_talk(rng, P2, P1)
    if resolution == "a refund":
        t += [(P2, "Then I can give you a full refund."), (P1, "Great, a refund please.")]
    elif resolution == "an exchange":
        t += [
            (P2, "Would you like a refund or an exchange?"),
            (P1, _pick(rng, ("I'll exchange it for a new one.", "An exchange, please."))),
        ]
    else:
        t += [
            (P2, "Without a receipt I can only offer store credit."),
            (P1, _pick(rng, ("OK, store credit is fine.", "Fine, I'll take the credit."))),
        ]
    summary = f"{P1} returns {item} because {reason}."
    summary += (
        f" {P1} has no receipt, so {P2} offers store credit."
        if not receipt
        else f" {P1} gets {resolution}."
    )
    return t, summary, "product return"


DESTINATIONS = ("Boston", "Chicago", "Denver", "Seattle", "Montreal", "San Diego", "Philadelphia")


def travel(rng: random.Random) -> tuple[list[tuple[str, str]], str, str]:
    dest = _pick(rng, DESTINATIONS)
    mode = _pick(rng, ("train", "flight", "bus"))
    day = _pick(rng, DAYS)
    price = rng.randrange(30, 480, 5)
    ret = rng.random() < 0.5
    seat = _pick(rng, ("a window seat", "an aisle seat", "a seat near the exit", ""))
    t: list[tuple[str, str]] = [
        (
            P1,
            _pick(
                rng,
                (
                    f"I need a {mode} ticket to {dest}.",
                    f"Hello, I'd like to book a {mode} to {dest}.",
                    f"Can I get a ticket to {dest}? By {mode}, please.",
                ),
            ),
        ),
        (P2, _pick(rng, ("When would you like to travel?", "For which day?", "What date?"))),
        (P1, _pick(rng, (f"This {day}.", f"On {day}, in the morning.", f"{day}, please."))),
        (
            P2,
            _pick(rng, ("One way or return?", "Do you need a return ticket?", "Single or return?")),
        ),
        (P1, "Return, please." if ret else _pick(rng, ("Just one way.", "One way."))),
    ]
    t += _small_talk(rng, P2, P1)
    t.append(
        (
            P2,
            _pick(
                rng,
                (
                    f"That comes to {price} dollars.",
                    f"It's {price} dollars.",
                    f"The fare is {price} dollars.",
                ),
            ),
        )
    )
    if seat:
        t.append((P1, _pick(rng, (f"Could I have {seat}?", f"I'd prefer {seat}."))))
        t.append((P2, _pick(rng, ("Done.", "Sure, I've reserved it.", "No problem."))))
    t.append((P1, _pick(rng, ("Here's my card.", "I'll pay by card.", "Can I pay in cash?"))))
    t.append(
        (
            P2,
            _pick(
                rng,
                (
                    "Here's your ticket. Have a good trip!",
                    "Thank you, enjoy your journey.",
                    "All set. Safe travels.",
                ),
            ),
        )
    )
    trip = "return" if ret else "one-way"
    summary = f"{P1} buys a {trip} {mode} ticket to {dest} for {day}, which costs {price} dollars."
    if seat:
        summary += f" {P1} gets {seat}."
    return t, summary, "travel booking"


ACTIVITIES = (
    "go hiking",
    "see a movie",
    "have a picnic",
    "go bowling",
    "visit the museum",
    "try the new ramen place",
)


def weekend_plans(rng: random.Random) -> tuple[list[tuple[str, str]], str, str]:
    activity = _pick(rng, ACTIVITIES)
    alt = _pick(rng, [a for a in ACTIVITIES if a != activity])
    day = _pick(rng, ("Saturday", "Sunday"))
    time = _pick(rng, ("10 am", "noon", "2 pm", "4 pm", "7 pm"))
    meet = _pick(
        rng, ("at the station", "at my place", "in front of the cinema", "at the bus stop")
    )
    change = rng.random() < 0.4
    t: list[tuple[str, str]] = [
        (
            P1,
            _pick(
                rng,
                (
                    "Are you free this weekend?",
                    "Do you have plans for the weekend?",
                    "What are you doing this weekend?",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (
                    "Not really, why?",
                    "Nothing special. What did you have in mind?",
                    "I'm free on both days.",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    f"Let's {activity} on {day}.",
                    f"How about we {activity} on {day}?",
                    f"I thought we could {activity} on {day}.",
                ),
            ),
        ),
    ]
    if change:
        t += [
            (
                P2,
                _pick(
                    rng,
                    (f"Hmm, I'd rather {alt}.", f"I did that last week. Could we {alt} instead?"),
                ),
            ),
            (P1, _pick(rng, ("Sure, why not.", "OK, sounds good.", "Fine by me."))),
        ]
        final = alt
    else:
        t.append((P2, _pick(rng, ("Sounds great!", "Good idea.", "I'd love to."))))
        final = activity
    t += _small_talk(rng, P1, P2)
    t += [
        (P2, _pick(rng, ("What time?", "When shall we meet?", "Where and when?"))),
        (
            P1,
            _pick(
                rng,
                (f"Let's meet {meet} at {time}.", f"{time}, {meet}?", f"Meet me {meet} at {time}."),
            ),
        ),
        (P2, _pick(rng, ("See you then.", "Perfect.", "Great, see you there."))),
    ]
    summary = f"{P1} and {P2} will {final} on {day}. They'll meet {meet} at {time}."
    if change:
        summary = f"{P1} suggests they {activity} on {day}, but {P2} prefers to {alt}. They'll meet {meet} at {time}."
    return t, summary, "weekend plans"


def bank_card(rng: random.Random) -> tuple[list[tuple[str, str]], str, str]:
    what = _pick(rng, ("lost", "had stolen", "left in a taxi"))
    days = rng.randint(3, 10)
    charge = rng.random() < 0.35
    amount = rng.randrange(20, 900, 5)
    t: list[tuple[str, str]] = [
        (
            P2,
            _pick(
                rng, ("City Bank, how may I help you?", "Hello, you're through to card services.")
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    f"Hi, I {what} my credit card.",
                    f"I think I {what} my bank card.",
                    f"My card, I {what} it yesterday.",
                ),
            ),
        ),
        (
            P2,
            _pick(
                rng,
                (
                    "I'll block it right away. Can you confirm your date of birth?",
                    "Let me cancel it for you. First, your date of birth, please.",
                ),
            ),
        ),
        (
            P1,
            _pick(
                rng,
                (
                    "It's the fourth of May, 1988.",
                    "March twelfth, 1975.",
                    "The twentieth of October, 1992.",
                ),
            ),
        ),
    ]
    t += _small_talk(rng, P2, P1)
    t.append((P2, _pick(rng, ("The card is blocked now.", "Done, nobody can use it anymore."))))
    if charge:
        t.append((P1, f"I see a charge of {amount} dollars that I didn't make."))
        t.append((P2, "I'll open a dispute for that transaction."))
    t += [
        (P1, _pick(rng, ("When will I get a new card?", "How long until I get a replacement?"))),
        (P2, _pick(rng, (f"Within {days} working days.", f"It should arrive in {days} days."))),
    ]
    summary = (
        f"{P1} {what} a credit card, and {P2} blocks it. A new card will arrive within {days} days."
    )
    if charge:
        summary = f"{P1} {what} a credit card, and {P2} blocks it and disputes a {amount}-dollar charge {P1} didn't make. A new card will arrive within {days} days."
    return t, summary, "bank card"


SCENARIOS: tuple[Callable[[random.Random], tuple[list[tuple[str, str]], str, str]], ...] = (
    restaurant,
    tech_support,
    doctor,
    apartment,
    job_interview,
    product_return,
    travel,
    weekend_plans,
    bank_card,
)


def generate(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[Example]:
    """`count` distinct examples, the same list for the same seed on any machine."""
    rng = random.Random(seed)
    seen: set[str] = set()
    examples: list[Example] = []
    attempts = 0
    while len(examples) < count:
        attempts += 1
        if attempts > count * 50:
            raise RuntimeError(f"could not generate {count} distinct dialogues; lower --count")
        scenario = SCENARIOS[len(examples) % len(SCENARIOS)]
        turns, summary, topic = scenario(rng)
        dialogue = _turns(turns)
        if dialogue in seen:
            continue
        seen.add(dialogue)
        examples.append(Example(dialogue=dialogue, summary=summary, topic=topic))
    return examples


def to_jsonl(examples: list[Example]) -> str:
    return "".join(
        json.dumps(
            {
                "id": f"sample-{i:04d}",
                "dialogue": e.dialogue,
                "summary": e.summary,
                "topic": e.topic,
            },
            ensure_ascii=False,
        )
        + "\n"
        for i, e in enumerate(examples)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=SAMPLE_PATH, help="JSONL file to write")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="number of dialogues")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_jsonl(generate(args.count, args.seed)), encoding="utf-8")
    print(f"wrote {args.count} dialogues to {args.out}")


if __name__ == "__main__":
    main()
