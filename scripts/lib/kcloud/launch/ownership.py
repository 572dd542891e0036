"""Which remote things are this directory's: marks set at launch, proofs checked before any
delete or adoption.

Every instance kcloud launches carries two tags: `kcloud-project=<directory id>` and
`kcloud-run=<launch id>` (a fresh random id per launch attempt, journalled before the call).
Ownership needs two independent proofs out of three:

  tag      the instance carries our directory id
  journal  its id, or its run tag, is in our journal
  key      it carries our *unique* SSH key (name or id; shared keys prove nothing)

so a tag alone (a copied `.kcloud/id`), a name alone (the same host prefix elsewhere) or a
shared key never deletes or adopts another directory's machine, while losing any one local
file (journal, state, id) still leaves two proofs.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

TAG_PROJECT = "kcloud-project"
TAG_RUN = "kcloud-run"


def new_run_id() -> str:
    return secrets.token_hex(6)


def launch_tags(project_id: str | None, run_id: str) -> tuple[tuple[str, str], ...]:
    tags = [(TAG_RUN, run_id)]
    if project_id:
        tags.insert(0, (TAG_PROJECT, project_id))
    return tuple(tags)


@dataclass(frozen=True)
class Owner:
    project_id: str | None = None
    key_refs: frozenset = frozenset()        # our unique key's name and ids; empty in shared mode
    journal_ids: frozenset = frozenset()
    journal_runs: frozenset = frozenset()
    names: frozenset = field(default=frozenset())   # host names journalled here (display only)

    @classmethod
    def from_events(cls, events: list[dict], project_id: str | None, key_refs=()) -> "Owner":
        ids = {e["id"] for e in events if e.get("id") and e.get("event") in ("launched", "adopt", "found")}
        runs = {e["run"] for e in events if e.get("run")}
        names = {e["name"] for e in events if e.get("name") and e.get("event") in ("launch", "launched")}
        return cls(project_id, frozenset(k for k in key_refs if k), frozenset(ids), frozenset(runs), frozenset(names))

    def with_keys(self, *refs: str) -> "Owner":
        return Owner(self.project_id, self.key_refs | {r for r in refs if r}, self.journal_ids,
                     self.journal_runs, self.names)

    def with_launch(self, run_id: str, instance_id: str | None = None) -> "Owner":
        return Owner(self.project_id, self.key_refs,
                     self.journal_ids | ({instance_id} if instance_id else set()),
                     self.journal_runs | {run_id}, self.names)

    def proofs(self, inst) -> set[str]:
        found = self.proofs_of(inst.tags or {}, {inst.id})
        if self.key_refs & set(inst.keys):
            found.add("key")
        return found

    def proofs_of(self, tags: dict, ids: set) -> set[str]:
        """Tag and journal proofs for anything tagged (instances, volumes): `ids` are the
        instance ids it belongs to (itself, or the instances a volume is attached to)."""
        found = set()
        if self.project_id and tags.get(TAG_PROJECT) == self.project_id:
            found.add("tag")
        run = tags.get(TAG_RUN)
        if (ids & self.journal_ids) or (run and run in self.journal_runs):
            found.add("journal")
        return found

    def owns(self, inst) -> bool:
        return len(self.proofs(inst)) >= 2

    def claims(self, inst) -> bool:
        """Some sign of ours, but maybe not enough to act on (shown by status and destroy)."""
        return bool(self.proofs(inst))
