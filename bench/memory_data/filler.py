"""Filler exchanges: the everyday requests that surround the facts in a conversation.

They deliberately share everyday words with the questions (work, home, food,
music, car, travel, reading...) without stating anything about the persona, so
neither keyword overlap nor topical similarity alone finds the evidence.
"""

from __future__ import annotations

from random import Random

from .facts import CITIES, INSTRUMENTS, MONTHS

_TOPICS = {
    "dish": ["lentil soup", "a quick curry", "banana bread", "a mushroom risotto",
             "overnight oats", "a Greek salad", "shakshuka", "pad thai"],
    "skill": ["public speaking", "touch typing", "Spanish", "watercolour painting",
              "sourdough baking", "chess openings", "basic SQL", "knitting"],
    "thing": ["a standing desk", "noise-cancelling headphones", "a rice cooker",
              "running shoes", "a robot vacuum", "a mechanical keyboard", "an e-reader"],
    "task": ["a cover letter", "an email to my landlord", "a birthday card message",
             "a complaint to the airline", "a toast for a retirement party",
             "a short bio for a conference", "a thank-you note to a teacher"],
    "question": ["why the sky is blue", "how compound interest works",
                 "what a sourdough starter is", "how vaccines train the immune system",
                 "why cats purr", "how noise-cancelling works", "what inflation means",
                 "how tides work", "why bread goes stale"],
    "genre": ["science fiction", "historical fiction", "mysteries", "poetry", "memoirs"],
    "place": CITIES,
    "month": MONTHS,
    "instrument": INSTRUMENTS,
    "code": ["Python", "JavaScript", "bash", "SQL", "Rust"],
    "problem": ["a list comprehension that is too slow", "a flaky unit test",
                "a regex for dates", "sorting a dictionary by value", "a CSV with bad quotes"],
}

_USER = [
    "Can you give me a recipe for {dish}? Something for a weeknight.",
    "I want to get better at {skill}. Where should I start?",
    "Is {thing} worth the money, or a fad?",
    "Could you help me write {task}?",
    "Random question: can you explain {question}?",
    "Any good {genre} recommendations? I read a lot on the train.",
    "What's the weather usually like in {place} in {month}?",
    "What's a good way to stay focused while working from home?",
    "I'm stuck on {problem} in {code}, any ideas?",
    "How do I keep houseplants alive? Mine keep dying.",
    "How long should I rest between sets at the gym?",
    "What are some cheap weekend activities for a rainy day?",
    "Can you summarise the main causes of the first world war in a few lines?",
    "What should I pack for a three-day hiking trip?",
    "How do I ask my manager for a raise without sounding pushy?",
    "Give me a five-minute breathing exercise, I'm stressed.",
    "What's the difference between a {instrument} and a violin, sound-wise?",
    "Tips for a long drive at night? I get sleepy.",
    "How do I clean a cast iron pan properly?",
    "Which houseplants are safe around animals?",
    "Suggest a name for a book club, something a bit playful.",
    "What's a polite way to decline a wedding invitation?",
    "What are good stretches after sitting all day at work?",
    "How can I make my home office less noisy?",
    "Is it better to rent or buy in a city like {place}?",
    "What foods are high in iron, other than red meat?",
    "Can you make me a simple weekly budget template?",
    "Help me plan a birthday dinner for six people.",
]

REPLIES = [
    "Sure! Here's a simple approach: start small, keep it consistent, and build from there. "
    "Would you like a step-by-step plan?",
    "Great question. In short, it comes down to a few key factors; I can go deeper on any "
    "of them if you like.",
    "Here are a few ideas you could try this week, pick whichever fits your schedule best.",
    "Happy to help. A good rule of thumb is to plan ahead, keep notes, and review what "
    "worked after a couple of weeks.",
    "That depends on your budget and how often you'd use it. Many people find it worth it, "
    "but a cheaper option often does the job.",
    "Here's a draft you can adapt. Feel free to tell me the tone you want and I'll revise it.",
    "Absolutely. Take it one step at a time, and don't worry if the first attempt isn't "
    "perfect.",
    "Good thinking. The main things to watch are timing, preparation and a bit of patience.",
]

_SMALLTALK = [
    ("Thanks, that's really helpful!", "You're welcome! Anything else on your mind?"),
    ("Long day today, just wanted to chat for a bit.", "Of course. What's been going on?"),
    ("Morning! Coffee is not working yet.", "Good morning! Maybe a short walk will help."),
    ("Ok back again, where were we?", "We were just going through your question, happy to "
     "pick it up again."),
]


def _fill(template: str, rng: Random) -> str:
    fields = {k: rng.choice(v) for k, v in _TOPICS.items() if "{" + k + "}" in template}
    return template.format(**fields)


def exchange(rng: Random) -> tuple[str, str]:
    """One filler (user text, assistant text) pair."""
    if rng.random() < 0.15:
        return rng.choice(_SMALLTALK)
    return _fill(rng.choice(_USER), rng), rng.choice(REPLIES)
