"""Edit cases: the facts to rewrite with their paraphrases, neighbourhood and unrelated facts.

From a pack (CounterFact's recipe on our packs): facts are taken round-robin over relations; each fact's
new target is the answer of the next fact of the same relation whose answer differs; the neighbourhood
is the other facts of that relation whose answer is not the new target; unrelated facts are facts of the
other relations. Inline rewrites use each other the same way. Paraphrases are the relation's other
phrasings (:data:`PARAPHRASES`, for the known-facts relations) plus the rewrite's own ``paraphrases``.
"""

from dataclasses import dataclass, field

from neurotrace.lab.editing.schema import EditRequest, Rewrite
from neurotrace.lab.errors import InputError
from neurotrace.lab.facts import load_pack

#: other phrasings of the known-facts relations (generalisation prompts); '{}' is the subject
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "landmark_city": ("The {} stands in the city of", "To visit the {}, you travel to the city of"),
    "landmark_country": ("{} can be found in the country of", "To see {}, you have to travel to"),
    "capital_of": ("{}'s capital city is", "The seat of government of {} is the city of"),
    "official_language": ("In {}, most people speak", "The language most people in {} speak is"),
    "athlete_sport": ("{} became a star in the sport of", "The sport {} is best known for is"),
    "company_founder": ("{} was started by", "The founder of {} is"),
    "musician_instrument": ("{} is best known for playing the", "The instrument {} played was the"),
    "company_headquarters": ("{} has its headquarters in the city of", "The main offices of {} are in"),
}
MAX_NEIGHBOURS = 10
MAX_UNRELATED = 10


@dataclass
class Probe:
    """One prompt about a subject and the answer it should give."""

    template: str
    subject: str
    target: str


@dataclass
class Case:
    id: str
    relation: str
    template: str
    subject: str
    target_new: str
    target_true: str | None
    paraphrases: list[str] = field(default_factory=list)
    neighbours: list[Probe] = field(default_factory=list)
    unrelated: list[Probe] = field(default_factory=list)
    references: list[Probe] = field(default_factory=list)  # facts whose true answer is target_new


def _round_robin(rewrites: list[Rewrite]) -> list[Rewrite]:
    by_rel: dict[str, list[Rewrite]] = {}
    for r in rewrites:
        by_rel.setdefault(r.relation, []).append(r)
    out: list[Rewrite] = []
    queues = list(by_rel.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def pack_rewrites(pack: str) -> list[Rewrite]:
    """Every fact of ``pack`` as a rewrite to the next same-relation fact's (different) answer."""
    facts = load_pack(pack).facts
    out = []
    for i, f in enumerate(facts):
        same = [g for g in facts[i + 1:] + facts[:i] if g.relation == f.relation and g.target != f.target]
        if not same:
            continue
        out.append(Rewrite(template=f.template, subject=f.clean_subject, target_new=same[0].target,
                           target_true=f.target, relation=f.relation, id=f.id))
    return _round_robin(out)


def build_cases(request: EditRequest) -> list[Case]:
    """The cases of a request (pack facts or inline rewrites), at most ``max_facts`` edited."""
    if (request.pack is None) == (not request.rewrites):
        raise InputError("rewrites", "give either inline `rewrites` or a `pack`",
                         fix="e.g. pack='known-facts' or rewrites=[{template, subject, target_new}]")
    pool = pack_rewrites(request.pack) if request.pack else list(request.rewrites)
    for i, r in enumerate(pool):
        if r.template.count("{}") != 1:
            raise InputError(f"rewrites[{i}].template", f"template {r.template!r} needs exactly one '{{}}'",
                             fix="write the subject slot as a single '{}'")
    edited = pool[: request.max_facts] if request.max_facts else pool
    return [_case(r, pool) for r in edited]


def _case(r: Rewrite, pool: list[Rewrite]) -> Case:
    known = [p for p in pool if p.target_true and p.subject != r.subject]
    neighbours = [Probe(p.template, p.subject, p.target_true or "") for p in known
                  if p.relation == r.relation and p.target_true != r.target_new][:MAX_NEIGHBOURS]
    unrelated = [Probe(p.template, p.subject, p.target_true or "") for p in known
                 if p.relation != r.relation][:MAX_UNRELATED]
    refs = [Probe(p.template, p.subject, p.target_true or "") for p in known if p.target_true == r.target_new][:2]
    paraphrases = [*PARAPHRASES.get(r.relation, ()), *r.paraphrases]
    return Case(id=r.id or f"{r.subject}/{r.relation or 'fact'}", relation=r.relation, template=r.template,
                subject=r.subject, target_new=r.target_new, target_true=r.target_true, paraphrases=paraphrases,
                neighbours=neighbours, unrelated=unrelated, references=refs)
