"""Fact slots: what a persona can tell the assistant, and the questions about it.

Each slot draws a value (a dict of fields) and states it in one of several
natural paraphrases. Questions come by kind:

- ``paraphrase``: worded with none of the evidence's content words (checked by
  the generator against a real FTS5 porter index, not trusted from here);
- ``keyword``: names the rare token the evidence holds (a name, a code, a number);
- ``temporal``: asks for the current value of a slot that changed (``updates``);
- ``multi``: needs every statement of a slot across sessions (``multi``).

``others`` are distractors: the same topic, about somebody else.
All text here is written for this benchmark (Apache-2.0, like the repo).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

Value = dict[str, str]

FIRST = ["Maya", "Tomas", "Priya", "Jonah", "Leila", "Osman", "Freya", "Dmitri", "Ines",
         "Kwame", "Sofia", "Rafael", "Hana", "Emeka", "Greta", "Luca", "Amara", "Bjorn",
         "Yuki", "Carmen", "Idris", "Noor", "Pavel", "Zara", "Mateo", "Aisha", "Henrik",
         "Lucia", "Tariq", "Elin", "Marco", "Saoirse", "Viktor", "Anya", "Desmond", "Ruth"]
SURNAMES = ["Halvorsen", "Okafor", "Brennan", "Castellanos", "Nakamura", "Lindqvist",
            "Abernathy", "Moreau", "Szabo", "Ferreira", "Kowalczyk", "Delacroix",
            "Achterberg", "Quispe", "Varga", "Oyelaran", "Rasmussen", "Pellegrini"]
CITIES = ["Lisbon", "Porto", "Utrecht", "Leipzig", "Valencia", "Gothenburg", "Krakow",
          "Bologna", "Ghent", "Tallinn", "Seville", "Aarhus", "Ljubljana", "Bratislava",
          "Montreal", "Halifax", "Adelaide", "Wellington"]
BREEDS = [("dog", "beagle"), ("dog", "border collie"), ("dog", "dachshund"),
          ("dog", "greyhound"), ("cat", "maine coon"), ("cat", "siamese"),
          ("cat", "tabby"), ("rabbit", "lop-eared bunny"), ("parrot", "cockatiel")]
PET_NAMES = ["Biscuit", "Pepper", "Juniper", "Mochi", "Waffles", "Ziggy", "Clementine",
             "Barnaby", "Nugget", "Pistachio", "Oberon", "Tofu", "Marmalade", "Rascal"]
COMPANIES = ["Fernhill Analytics", "Quarry Robotics", "Bluefin Logistics", "Northgate Bank",
             "Solvik Energy", "Tessellate Games", "Harbor Health", "Moraine Software",
             "Copperleaf Media", "Atlas Freight", "Veridian Labs", "Kestrel Insurance"]
ROLES = ["data engineer", "product designer", "nurse practitioner", "sales lead",
         "backend developer", "account manager", "research scientist", "UX writer"]
INSTRUMENTS = ["cello", "trumpet", "ukulele", "bass guitar", "clarinet", "drums", "violin"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
ALLERGENS = ["peanuts", "shellfish", "sesame", "gluten", "kiwi", "lactose", "eggs"]
CARS = ["Skoda Octavia", "Mazda 3", "Volvo V60", "Toyota Yaris", "Kia Niro", "Renault Zoe",
        "Subaru Outback", "Honda Jazz"]
COLOURS = ["dark green", "silver", "bright red", "navy blue", "white", "charcoal grey"]
CODENAMES = ["Falcon", "Bluebird", "Orchard", "Lighthouse", "Tundra", "Sapphire", "Kingfisher",
             "Monsoon", "Granite", "Pinwheel", "Aurora", "Driftwood"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
BOOKS = [("The Salt Road", "Ingrid Vale"), ("Paper Lanterns", "Omar Reyes"),
         ("A Winter Orchard", "Tess Cardell"), ("The Glass Ferry", "Niall Ortega"),
         ("Quiet Engines", "Bea Lindholm"), ("The Ninth Harbour", "Colm Adair"),
         ("Small Hours", "Ana Petrov"), ("The Copper Atlas", "Ravi Menon")]
DRUGS = [("sertraline", "anxiety"), ("lisinopril", "blood pressure"),
         ("levothyroxine", "thyroid"), ("montelukast", "asthma"),
         ("metformin", "blood sugar"), ("omeprazole", "acid reflux")]
AIRLINES = ["LH", "KL", "TP", "SK", "AY", "IB", "OS"]


def _pick(rng: Random, pool: list[str], avoid: str = "") -> str:
    choices = [p for p in pool if p != avoid]
    return rng.choice(choices)


@dataclass(frozen=True)
class Slot:
    """One kind of fact, its phrasings and the questions it answers."""

    name: str
    draw: Callable[[Random], Value]
    statements: list[str]
    others: list[str]
    acks: list[str]
    questions: dict[str, list[tuple[str, str]]]  # kind -> [(question, answer template)]
    updates: list[str] = field(default_factory=list)
    redraw: Callable[[Random, Value], Value] | None = None
    multi: list[tuple[str, str]] = field(default_factory=list)  # over every statement


def _pet(rng: Random) -> Value:
    species, breed = rng.choice(BREEDS)
    return {"species": species, "breed": breed, "pet": rng.choice(PET_NAMES)}


def _job(rng: Random) -> Value:
    return {"company": rng.choice(COMPANIES), "role": rng.choice(ROLES)}


def _city(rng: Random) -> Value:
    return {"city": rng.choice(CITIES), "floor": str(rng.randint(2, 9))}


def _car(rng: Random) -> Value:
    return {"car": rng.choice(CARS), "colour": rng.choice(COLOURS)}


def _book(rng: Random) -> Value:
    title, author = rng.choice(BOOKS)
    return {"book": title, "author": author}


SLOTS: list[Slot] = [
    Slot(
        "pet", _pet,
        statements=[
            "We finally brought home a {breed} from the shelter, the kids named her {pet}.",
            "Big news at our place: a little {breed} called {pet} joined the family on Sunday.",
            "Say hello to {pet}, our new {breed}. Adopted yesterday and already asleep on my bed.",
        ],
        others=[
            "My neighbour {other} just got a {breed2} named {pet2}, it barks all night.",
            "{other} keeps sending me photos of her {breed2}, {pet2}. Cute but a lot.",
        ],
        acks=["Congratulations on {pet}! A {breed} is a lovely companion.",
              "How exciting! Let me know if you want tips on settling {pet} in."],
        questions={
            "paraphrase": [("What sort of animal lives with me?", "{breed}"),
                           ("Which creature did my household take in?", "{breed}")],
            "keyword": [("What breed is {pet}?", "{breed}"),
                        ("Remind me, what kind of animal is {pet}?", "{breed}")],
        },
        multi=[("List every animal I've told you I have.", "{pet}"),
               ("What are the names of all my pets?", "{pet}")],
    ),
    Slot(
        "job", _job,
        statements=[
            "First week done at {company}! I'm their new {role} and the team seems great.",
            "I signed the offer from {company} today, starting as a {role} next month.",
            "Quick update on my career: I now work for {company} as a {role}.",
        ],
        updates=[
            "I handed in my notice and took a {role} position at {company} instead.",
            "Career change: I left my old place and joined {company} as a {role} this week.",
            "Starting Monday I'm with {company}, doing {role} work. Scary but exciting.",
        ],
        redraw=lambda rng, v: {"company": _pick(rng, COMPANIES, v["company"]),
                               "role": rng.choice(ROLES)},
        others=["My friend {other} just joined {company2} as a {role2}.",
                "{other} from my old team interviewed at {company2} last week."],
        acks=["That's a big step, congratulations on {company}!",
              "Good luck with the new {role} role, the first weeks are always intense."],
        questions={
            "paraphrase": [("Who is my employer?", "{company}"),
                           ("Which firm pays my salary?", "{company}")],
            "keyword": [("What is my title at {company}?", "{role}")],
            "temporal": [("Where do I work now?", "{company}"),
                         ("What's my current job?", "{company}"),
                         ("Which company am I currently employed by?", "{company}")],
        },
        multi=[("Which companies have I worked for since we started talking?", "{company}")],
    ),
    Slot(
        "home", _city,
        statements=[
            "We signed the lease on a flat in {city}, fourth time lucky.",
            "Moving boxes everywhere, but we're officially living in {city} now.",
            "Our new apartment in {city} is on the {floor}th floor, no lift of course.",
        ],
        updates=[
            "Surprise, we relocated again: our address is in {city} from this week on.",
            "We packed up everything and moved to {city}. Still finding the good coffee spots.",
        ],
        redraw=lambda rng, v: {"city": _pick(rng, CITIES, v["city"]),
                               "floor": str(rng.randint(2, 9))},
        others=["My cousin {other} bought a house in {city2} last spring.",
                "{other} is thinking about moving to {city2} for the schools."],
        acks=["{city} is a wonderful place to live!",
              "Settling into a new city takes time, enjoy exploring {city}."],
        questions={
            "paraphrase": [("Which town is my residence in?", "{city}"),
                           ("Where is my home these days?", "{city}")],
            "keyword": [("What did I tell you about {city}?", "{city}")],
            "temporal": [("Which city do I live in now?", "{city}"),
                         ("Where did we move to most recently?", "{city}"),
                         ("Where am I currently based?", "{city}")],
        },
        multi=[("Which places have I lived in while we've been chatting?", "{city}")],
    ),
    Slot(
        "allergy", lambda rng: {"allergen": rng.choice(ALLERGENS)},
        statements=[
            "Heads up for recipes: I react badly to {allergen}, hives and all.",
            "The doctor confirmed it, I'm allergic to {allergen}. No more of that for me.",
            "Please never suggest anything containing {allergen}, it makes me really ill.",
        ],
        others=["My colleague {other} can't have {allergen2}, so team lunches are tricky.",
                "{other}'s son has a {allergen2} allergy, they carry an epipen everywhere."],
        acks=["Noted, I'll keep {allergen} out of any suggestions.",
              "Thanks for telling me, I'll avoid {allergen} in meal ideas."],
        questions={
            "paraphrase": [("Is there a food that I must avoid?", "{allergen}"),
                           ("What ingredient should my meals exclude?", "{allergen}")],
            "keyword": [("Can I eat dishes with {allergen}?", "{allergen}")],
        },
    ),
    Slot(
        "lessons",
        lambda rng: {"instrument": rng.choice(INSTRUMENTS), "day": rng.choice(WEEKDAYS)},
        statements=[
            "I've started {instrument} lessons every {day} evening, my fingers hurt.",
            "Every {day} I now go to a {instrument} class after work. Finally doing it!",
        ],
        others=["{other} plays {instrument2} in a band, they have a gig on {day2}."],
        acks=["Learning the {instrument} is so rewarding, keep practising!"],
        questions={
            "paraphrase": [("What music am I learning to play?", "{instrument}"),
                           ("When is my weekly music session?", "{day}")],
            "keyword": [("On which day are my {instrument} lessons?", "{day}")],
        },
    ),
    Slot(
        "car", _car,
        statements=[
            "Picked up a used {car} yesterday, {colour}, only 40k on the clock.",
            "We finally bought a {colour} {car}. No more borrowing my dad's.",
        ],
        updates=[
            "Sold the old car and drove home a {colour} {car} today.",
            "We traded in our vehicle for a {colour} {car}, much better on fuel.",
        ],
        redraw=lambda rng, v: {"car": _pick(rng, CARS, v["car"]),
                               "colour": rng.choice(COLOURS)},
        others=["{other} just crashed her {car2} into a bollard, she's fine thankfully.",
                "My brother-in-law {other} swears by his {car2}."],
        acks=["Enjoy the new {car}!", "A {car} is a solid choice."],
        questions={
            "paraphrase": [("What do I drive?", "{car}"),
                           ("Which automobile is mine?", "{car}")],
            "keyword": [("What colour is my {car}?", "{colour}")],
            "temporal": [("What model of car do I own now?", "{car}"),
                         ("Which car did we buy most recently?", "{car}")],
        },
        multi=[("Which cars have I had since we met?", "{car}")],
    ),
    Slot(
        "sibling",
        lambda rng: {"sib": rng.choice(FIRST), "month": rng.choice(MONTHS),
                     "rel": rng.choice(["brother", "sister"])},
        statements=[
            "My {rel} {sib} is getting married in {month}, I'm giving a speech, help.",
            "{sib}, my {rel}, finally set a wedding date: {month}.",
        ],
        others=["{other}'s wedding is in {month2}, another suit to rent."],
        acks=["How lovely, I'd be happy to help with the speech for {sib}."],
        questions={
            "paraphrase": [("When does my sibling tie the knot?", "{month}")],
            "keyword": [("When is {sib}'s wedding?", "{month}")],
        },
    ),
    Slot(
        "project",
        lambda rng: {"code": rng.choice(CODENAMES), "month": rng.choice(MONTHS),
                     "day": str(rng.randint(2, 28))},
        statements=[
            "Work is crazy: the {code} launch is due {month} {day} and nothing is ready.",
            "We have a hard deadline of {month} {day} for project {code}, wish me luck.",
        ],
        others=["{other}'s team is running project {code2}, due in {month2}."],
        acks=["That's a tight timeline for {code}. Want help planning it?"],
        questions={
            "paraphrase": [("By what date must my team ship?", "{month} {day}")],
            "keyword": [("When is {code} due?", "{month} {day}")],
        },
    ),
    Slot(
        "medication",
        lambda rng: dict(zip(("drug", "condition"), rng.choice(DRUGS), strict=True))
        | {"doc": rng.choice(SURNAMES)},
        statements=[
            "Dr. {doc} put me on {drug} for my {condition}, we'll see how it goes.",
            "Started {drug} this week, Dr. {doc} thinks it'll help with the {condition}.",
        ],
        others=["{other} takes {drug2} too, she said the first weeks were rough."],
        acks=["I hope the {drug} helps. Do follow up with Dr. {doc} about side effects."],
        questions={
            "paraphrase": [("Which pills was I prescribed?", "{drug}")],
            "keyword": [("What did Dr. {doc} prescribe me?", "{drug}")],
        },
    ),
    Slot(
        "book", _book,
        statements=[
            "I'm halfway through {book} by {author}, can't put it down.",
            "Currently reading {book}. {author} writes such strange, sad characters.",
        ],
        updates=[
            "Finished that one! Now I've picked up {book} by {author}.",
            "New read on my nightstand: {book}, the latest from {author}.",
        ],
        redraw=lambda rng, v: dict(zip(("book", "author"),
                                       rng.choice([b for b in BOOKS if b[0] != v["book"]]),
                                       strict=True)),
        others=["My book club, hosted by {other}, is doing {book2} this month."],
        acks=["{book} sounds great, tell me what you think when you finish."],
        questions={
            "paraphrase": [("Which novel is on my nightstand at the moment?", "{book}")],
            "keyword": [("Who is the author of {book}?", "{author}")],
            "temporal": [("What am I reading now?", "{book}"),
                         ("Which book did I pick up last?", "{book}")],
        },
        multi=[("What books have I mentioned reading?", "{book}")],
    ),
    Slot(
        "flight",
        lambda rng: {"code": rng.choice(AIRLINES) + str(rng.randint(100, 9899)),
                     "city": rng.choice(CITIES), "month": rng.choice(MONTHS)},
        statements=[
            "Booked it: flight {code} to {city} in {month}, window seat.",
            "My conference trip is sorted, I'm on {code} to {city} in {month}.",
        ],
        others=["{other} is flying to {city2} in {month2}, we might overlap."],
        acks=["Safe travels to {city}!"],
        questions={
            "paraphrase": [("Where am I travelling by plane?", "{city}")],
            "keyword": [("Where is flight {code} going?", "{city}")],
        },
    ),
]

SLOT_BY_NAME = {s.name: s for s in SLOTS}


def other_value(rng: Random) -> Value:
    """Fields for distractor templates: another person with their own values."""
    _species, breed = rng.choice(BREEDS)
    return {"other": rng.choice(FIRST), "breed2": breed, "pet2": rng.choice(PET_NAMES),
            "company2": rng.choice(COMPANIES), "role2": rng.choice(ROLES),
            "city2": rng.choice(CITIES), "allergen2": rng.choice(ALLERGENS),
            "instrument2": rng.choice(INSTRUMENTS), "day2": rng.choice(WEEKDAYS),
            "car2": rng.choice(CARS), "month2": rng.choice(MONTHS),
            "code2": rng.choice(CODENAMES), "drug2": rng.choice(DRUGS)[0],
            "book2": rng.choice(BOOKS)[0],
            "rel2": rng.choice(["brother", "sister", "cousin", "colleague"])}

# On-topic talk that states no fact about the persona: it shares the evidence's topic
# (and often its words), so topical similarity alone does not find the evidence.
CHATTER: dict[str, list[str]] = {
    "pet": ["How often should a {breed2} be walked or played with?",
            "What do shelters usually ask before an adoption?",
            "Is it cruel to leave an animal alone while I'm at work all day?",
            "Which human foods are toxic to a {breed2}?"],
    "job": ["How do I negotiate salary when an employer makes an offer?",
            "What should I ask in the first week at a new company?",
            "Can you explain what a {role2} actually does day to day?",
            "Is it normal to feel out of my depth in a new role?"],
    "home": ["What should I check before signing a lease on an apartment?",
             "How do I get to know a new neighbourhood quickly?",
             "Is {city2} expensive to live in compared to other cities?",
             "Tips for packing fragile things when moving house?"],
    "allergy": ["What are common hidden sources of {allergen2} in restaurant food?",
                "How do I tell a waiter about a food allergy without fuss?",
                "What's the difference between an intolerance and an allergy?"],
    "lessons": ["How many minutes a day should an adult beginner practise an instrument?",
                "Is the {instrument2} hard to learn as an adult?",
                "How do I read sheet music, the very basics?"],
    "car": ["How often does a car need its tyres rotated?",
            "Is a {car2} a good first car?",
            "Electric or hybrid for mostly city driving?"],
    "sibling": ["How long should a wedding speech be?",
                "What's a good wedding gift for a {rel2} who has everything?",
                "How do I stay calm when giving a speech at a wedding?"],
    "project": ["How do I tell my manager a launch date is unrealistic?",
                "What goes into a good release checklist for a software product?",
                "Any tips to avoid burnout before a big deadline at work?"],
    "medication": ["Is it okay to drink coffee with {drug2}?",
                   "What questions should I ask my doctor about a new prescription?",
                   "How long do most medications take to start working?"],
    "book": ["Can you recommend novels similar to {book2}?",
             "How do I make time to read more books with a busy job?",
             "What makes a good book club discussion question?"],
    "flight": ["How early should I get to the airport for an international flight?",
               "What's the best way to beat jet lag after a long flight to {city2}?",
               "Window or aisle seat on a long-haul plane trip?"],
}
