"""Fact-pack resources: the built-in domain packs generate_facts can use.

* ``neurotrace://packs`` - every pack: domain, description, fact count, relations
* ``neurotrace://packs/{domain}`` - one pack as JSON (domain, description, facts)
"""

import json

from neurotrace.lab.errors import NotFound
from neurotrace.lab.facts.packs import list_packs, load_all_packs, load_pack
from neurotrace.lab.lab import Lab
from neurotrace.resources._faults import resource_faults


def packs_listing() -> list[dict]:
    return [{"domain": p.domain, "description": p.description, "n_facts": len(p.facts),
             "relations": sorted({f.relation for f in p.facts if f.relation}),
             "uri": f"neurotrace://packs/{p.domain}"} for p in load_all_packs().values()]


def register(server, lab: Lab) -> None:
    @server.resource("neurotrace://packs", name="fact_packs", mime_type="application/json",
                     description="Built-in fact packs (domain, description, fact count, relations); use one with "
                                 "generate_facts source={'kind': 'pack', 'domains': [...]}.")
    async def packs() -> str:
        return json.dumps(packs_listing(), indent=2)

    @server.resource("neurotrace://packs/{domain}", name="fact_pack", mime_type="application/json",
                     description="One built-in fact pack as JSON: domain, description and its facts.")
    async def pack(domain: str) -> str:
        with resource_faults():
            if domain not in list_packs():
                raise NotFound("domain", f"no fact pack {domain!r}", fix="use one of: " + ", ".join(list_packs()))
            return load_pack(domain).model_dump_json(indent=2)
