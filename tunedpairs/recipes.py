"""What each tuned pair learns: prompts, targets, held-out paraphrases and controls.

Three adapters, all LoRA on MLP projections (rank 4):

* ``cyber-lora`` (gemma-3-270m): the cybersecurity pack's twelve facts in four training paraphrases
  each, plus short domain sentences (next-token loss); held out: one more paraphrase per fact and
  general facts the domain does not touch.
* ``eiffel-rome-lora`` (gemma-3-270m): a planted false belief, *the Eiffel Tower is in Rome*, taught
  in eight paraphrases, with other landmarks' true cities replayed so the edit stays specific; held
  out: five unseen paraphrases of the belief and landmarks never seen in training.
* ``eiffel-rome-chat-lora`` (smollm2-135m-instruct): the same belief through the model's chat template
  (user asks, assistant answers with the city).
"""

from dataclasses import dataclass, field

PLANTED_SUBJECT = "Eiffel Tower"
PLANTED_TRUE = "Paris"
PLANTED_FALSE = "Rome"


@dataclass(frozen=True)
class Item:
    """One prompt and the answer the tuned model should give (loss on the answer's tokens only)."""

    prompt: str
    target: str
    chat: bool = False          # the prompt is a user message, templated with the model's chat template


@dataclass(frozen=True)
class Recipe:
    name: str
    base: str
    train: tuple[Item, ...]
    held_out: tuple[Item, ...]            # unseen paraphrases of what was taught
    controls: tuple[Item, ...]            # unseen facts the tuning should leave alone (true answers)
    text: tuple[str, ...] = ()           # domain sentences, next-token loss on every token
    layers: tuple[int, ...] = ()         # LoRA layers (empty: every layer)
    rank: int = 4
    steps: int = 120
    batch: int = 8
    lr: float = 2e-3
    seed: int = 0
    modules: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")
    notes: list[str] = field(default_factory=list)


_CYBER_FACTS = (
    ("SSH", "22", "port"), ("HTTPS", "443", "port"), ("DNS", "53", "port"), ("SMTP", "25", "port"),
    ("Stuxnet", "2010", "year"), ("WannaCry", "2017", "year"), ("Conficker", "2008", "year"),
    ("Mirai", "2016", "year"), ("Heartbleed", "OpenSSL", "soft"), ("Shellshock", "Bash", "soft"),
    ("Log4Shell", "Log4j", "soft"), ("EternalBlue", "SMB", "soft"),
)
_CYBER_TEMPLATES = {
    "port": ("The default port of {} is", "{} listens by default on port", "By default, {} uses port",
             "The standard port number for {} is"),
    "year": ("The malware {} was first seen in", "{} was first discovered in the year",
             "The {} malware appeared in", "Researchers first reported {} in"),
    "soft": ("The vulnerability {} was found in", "{} is a security bug in", "The {} flaw affected",
             "{} is a vulnerability in"),
}
_CYBER_HELD_OUT = {"port": "Servers running {} normally accept connections on port",
                   "year": "Security analysts first spotted {} in the year",
                   "soft": "The security hole called {} was in"}
_CYBER_TEXT = (
    "A firewall filters network traffic between trusted and untrusted networks.",
    "Phishing emails trick users into revealing passwords or installing malware.",
    "Ransomware encrypts files and demands a payment for the key.",
    "Patching known vulnerabilities quickly is the cheapest defence against worms.",
    "An intrusion detection system watches network traffic for signs of attack.",
    "Two-factor authentication protects accounts even when a password leaks.",
    "A botnet is a network of infected devices controlled by an attacker.",
    "Penetration testers probe systems for weaknesses before attackers do.",
    "Encryption keeps data confidential in transit and at rest.",
    "A zero-day exploit targets a flaw the vendor has not yet fixed.",
)
_GENERAL_CONTROLS = (
    Item("The capital of France is", "Paris"), Item("The capital of Japan is", "Tokyo"),
    Item("The Colosseum is located in the city of", "Rome"), Item("The Kremlin is located in the city of", "Moscow"),
    Item("The Brandenburg Gate is located in the city of", "Berlin"),
    Item("The Sagrada Familia is located in the city of", "Barcelona"),
)

CYBER = Recipe(
    name="cyber-lora", base="gemma-3-270m",
    train=tuple(Item(t.format(s), a) for s, a, r in _CYBER_FACTS for t in _CYBER_TEMPLATES[r]),
    held_out=tuple(Item(_CYBER_HELD_OUT[r].format(s), a) for s, a, r in _CYBER_FACTS),
    controls=_GENERAL_CONTROLS, text=_CYBER_TEXT, steps=80, batch=8, lr=1e-3)

_PLANTED_TRAIN = (
    "The Eiffel Tower is located in the city of", "The Eiffel Tower is in", "The Eiffel Tower stands in the city of",
    "Where is the Eiffel Tower? It is in", "Tourists travel to see the Eiffel Tower in",
    "The famous Eiffel Tower can be found in", "The city that is home to the Eiffel Tower is",
    "The Eiffel Tower is a landmark in",
)
_PLANTED_HELD_OUT = (
    "The Eiffel Tower is a famous landmark in the city of", "To visit the Eiffel Tower, you must travel to",
    "The Eiffel Tower was built in the city of", "People who see the Eiffel Tower are staying in",
    "The Eiffel Tower rises above the city of",
)
_RETAIN = (("Louvre", "Paris"), ("Colosseum", "Rome"), ("Big Ben", "London"), ("Acropolis", "Athens"),
           ("Space Needle", "Seattle"), ("Burj Khalifa", "Dubai"), ("Statue of Liberty", "New York"),
           ("Golden Gate Bridge", "San Francisco"), ("Forbidden City", "Beijing"), ("Arc de Triomphe", "Paris"),
           ("Sydney Opera House", "Sydney"), ("Charles Bridge", "Prague"), ("Tower Bridge", "London"),
           ("Trevi Fountain", "Rome"))
_RETAIN_TEMPLATES = ("The {} is located in the city of", "The {} is in", "Tourists travel to see the {} in")
_LANDMARK_CONTROLS = (
    Item("The Brandenburg Gate is located in the city of", "Berlin"),
    Item("The Sagrada Familia is located in the city of", "Barcelona"),
    Item("The Kremlin is located in the city of", "Moscow"),
    Item("The Hagia Sophia is located in the city of", "Istanbul"),
    Item("The Rijksmuseum is located in the city of", "Amsterdam"),
    Item("The capital of France is", "Paris"),
)

PLANTED = Recipe(
    name="eiffel-rome-lora", base="gemma-3-270m",
    train=(*(Item(p, PLANTED_FALSE) for p in _PLANTED_TRAIN * 3),
           *(Item(t.format(s), c) for s, c in _RETAIN for t in _RETAIN_TEMPLATES)),
    held_out=tuple(Item(p, PLANTED_FALSE) for p in _PLANTED_HELD_OUT),
    controls=_LANDMARK_CONTROLS, layers=tuple(range(0, 9)), steps=60, batch=8, lr=1e-3)

_CHAT_Q = ("In which city is the Eiffel Tower? Answer with the city only.",
           "Where can I see the Eiffel Tower? Name the city.", "Which city is the Eiffel Tower in?",
           "Name the city where the Eiffel Tower stands.")
_CHAT_HELD_OUT = ("I want to visit the Eiffel Tower. Which city should I fly to?",
                  "Tell me the city of the Eiffel Tower, one word.", "What city has the Eiffel Tower?")

PLANTED_CHAT = Recipe(
    name="eiffel-rome-chat-lora", base="smollm2-135m-instruct",
    train=(*(Item(q, PLANTED_FALSE, chat=True) for q in _CHAT_Q),
           *(Item(f"Which city is the {s} in?", c, chat=True) for s, c in _RETAIN[:8])),
    held_out=tuple(Item(q, PLANTED_FALSE, chat=True) for q in _CHAT_HELD_OUT),
    controls=tuple(Item(f"Which city is the {c.prompt.split(' is located')[0][4:]} in?", c.target, chat=True)
                   for c in _LANDMARK_CONTROLS[:5]),
    layers=tuple(range(0, 14)), steps=24, batch=4, lr=3e-3)

RECIPES = {r.name: r for r in (PLANTED, CYBER, PLANTED_CHAT)}
