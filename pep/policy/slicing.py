"""Slices: evaluate each request against only the policies and entities it can touch.

Cedar through cedarpy costs time in proportion to what it is handed: cloning a 100,000
entity store to add one request entity takes hundreds of milliseconds, and every policy
in the set is considered on every call. So a snapshot keeps

- an **entity index**: each stored entity's Cedar JSON and the entities it points to
  (parents and entity references inside its attributes). A request gets a small
  `Entities` handle holding the closure of what it names (principal, resource, user,
  chain agents, context references) plus the entities the policies name literally.
  Anything a policy could reach from the request is in that closure, so the answer is
  Cedar's answer over the whole store.
- a **policy index** by principal scope and action scope. A policy whose scope cannot
  match the request's principal (or its ancestors) and action (or its action groups)
  is never evaluated by Cedar past its scope, so leaving it out changes no decision,
  no determining policy and no error.

Both slices are cached per snapshot, keyed by what determines them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import cedarpy

from pep.policy.lru import LRU
from pep.policy.shapes import ValidatedShapes, entity_shape
from pep.uids import AGENT, Uid, is_action_type, parse_json_uid, parse_uid


def entity_refs(value: Any) -> Iterator[Uid]:
    """Entity references inside a Cedar JSON value (`__entity` and `{type, id}` forms)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            uid = parse_json_uid(v) if len(v) == 1 or set(v) == {"type", "id"} else None
            if uid is not None:
                yield uid
                continue
            if isinstance(v.get("__entity"), dict) and len(v) == 1:
                continue  # a malformed escape holds no reference
            if "__extn" in v and len(v) == 1:
                continue
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


class EntityIndex:
    """Stored entities by uid, with the edges a policy can follow from each."""

    def __init__(
        self,
        entities: Iterable[dict[str, Any]],
        schema: cedarpy.Schema | None,
        *,
        always: Iterable[Uid] = (),
        cache_size: int = 4096,
        agents: Mapping[str, Any] | None = None,
        agent_entity: Callable[[Any], dict[str, Any]] | None = None,
        shapes: ValidatedShapes | None = None,
    ) -> None:
        """`agents` (registry records by id) become `Agent` entities through `agent_entity`
        only when a request reaches them. `shapes`: the snapshot's validated shapes, so a
        request entity of a shape the schema accepted is added without validation."""
        self.schema = schema
        self.shapes = shapes
        # Edges, JSON text and agent entities are worked out on first use: a reload of
        # 100,000 agents should not pay for entities no request ever touches.
        self._agents: Mapping[str, Any] = agents or {}
        self._agent_entity = agent_entity
        self._made: dict[Uid, dict[str, Any]] = {}
        self._entities: dict[Uid, dict[str, Any]] = {}
        self._uids: frozenset[Uid] | None = None
        self._json: dict[Uid, str] = {}
        self._edges: dict[Uid, tuple[Uid, ...]] = {}
        self._parents: dict[Uid, tuple[Uid, ...]] = {}
        for ent in entities:
            uid = parse_json_uid(ent.get("uid"))
            if uid is not None:
                self._entities[uid] = ent
        # Action entities come from the schema when there is one; without it, from the store.
        self._actions: tuple[Uid, ...] = (
            () if schema is not None else tuple(u for u in self._entities if is_action_type(u[0]))
        )
        self._literal = tuple(always)
        self._always = frozenset(self.closure([*self._literal, *self._actions]))
        self._cache_size = cache_size
        self._cache: LRU[tuple[Uid, ...], cedarpy.Entities] = LRU(cache_size)

    def __contains__(self, uid: object) -> bool:
        if uid in self._entities:
            return True
        return isinstance(uid, tuple) and len(uid) == 2 and uid[0] == AGENT and uid[1] in self._agents

    def __len__(self) -> int:
        return len(self._entities) + len(self._agents)

    @property
    def uids(self) -> frozenset[Uid]:
        """Every stored uid (built once: use `uid in index` on hot paths)."""
        if self._uids is None:
            self._uids = frozenset(self._entities) | {(AGENT, a) for a in self._agents}
        return self._uids

    def _get(self, uid: Uid) -> dict[str, Any] | None:
        ent = self._entities.get(uid) or self._made.get(uid)
        if ent is None and uid[0] == AGENT and self._agent_entity is not None:
            record = self._agents.get(uid[1])
            if record is not None:
                ent = self._made[uid] = self._agent_entity(record)
        return ent

    def _parents_of(self, uid: Uid) -> tuple[Uid, ...]:
        parents = self._parents.get(uid)
        if parents is None:
            ent = self._get(uid)
            raw = ent.get("parents") if ent is not None else None
            parents = tuple(p for p in (parse_json_uid(x) for x in raw or ()) if p is not None)
            self._parents[uid] = parents  # a benign race: every thread computes the same value
        return parents

    def _edges_of(self, uid: Uid) -> tuple[Uid, ...]:
        edges = self._edges.get(uid)
        if edges is None:
            ent = self._get(uid)
            attrs = ent.get("attrs") if ent is not None else None
            edges = self._parents_of(uid) + tuple(entity_refs(attrs or {}))
            self._edges[uid] = edges
        return edges

    def _text(self, uid: Uid) -> str:
        text = self._json.get(uid)
        if text is None:
            text = json.dumps(self._get(uid), separators=(",", ":"))
            self._json[uid] = text
        return text

    def closure(self, roots: Iterable[Uid]) -> set[Uid]:
        """Every stored entity reachable from `roots` through parents and attribute references."""
        seen: set[Uid] = set()
        stack = [r for r in roots if r in self]
        while stack:
            uid = stack.pop()
            if uid in seen:
                continue
            seen.add(uid)
            stack.extend(e for e in self._edges_of(uid) if e not in seen and e in self)
        return seen

    def ancestors(self, uid: Uid, parents: Iterable[Uid] = ()) -> set[Uid]:
        """Transitive parents of `uid` (or of an unstored entity with these `parents`)."""
        out: set[Uid] = set()
        stack = list(parents) + list(self._parents_of(uid))
        while stack:
            p = stack.pop()
            if p in out:
                continue
            out.add(p)
            stack.extend(self._parents_of(p))
        return out

    def with_added(self, entities: Iterable[dict[str, Any]]) -> EntityIndex:
        """A new index: this one's entities plus `entities` (a test suite's own)."""
        return EntityIndex(
            [*self._entities.values(), *entities],
            self.schema,
            always=self._literal,
            cache_size=self._cache_size,
            agents=self._agents,
            agent_entity=self._agent_entity,
        )

    def handle(self, roots: Iterable[Uid], delta: list[dict[str, Any]] | None = None) -> cedarpy.Entities:
        """A Cedar entity set for a request: the closure of `roots` plus `delta` (request entities).

        Raises ValueError when `delta` does not fit the schema or clashes with the store.
        """
        refs: set[Uid] = set(roots)
        for ent in delta or ():
            refs.update(u for u in (parse_json_uid(p) for p in ent.get("parents") or ()) if u is not None)
            refs.update(entity_refs(ent.get("attrs") or {}))
        # Keyed on the stored roots only: an unstored one (a resource the request describes, a
        # user built from the token) adds nothing to the closure, so it must not cost a new slice.
        key = tuple(sorted(r for r in refs if r in self))
        base = self._cache.get(key)
        if base is None:
            members = self.closure(refs) | self._always
            text = "[" + ",".join(self._text(u) for u in sorted(members)) + "]"
            base = cedarpy.Entities.from_json_str(text, self.schema)
            self._cache.put(key, base)
        if not delta:
            return base
        text = json.dumps(delta)
        if self.shapes is None or self.schema is None:
            return base.with_added_json_str(text, self.schema)
        keys = [entity_shape(ent) for ent in delta]
        if all(self.shapes.known(k) for k in keys):
            return base.with_added_json_str(text, None)  # the schema accepted these shapes before
        merged = base.with_added_json_str(text, self.schema)  # ValueError when they do not fit
        for k in keys:
            self.shapes.learn(k)
        return merged


class PolicyIndex:
    """Policies by principal scope and action scope; slices cached as cedarpy handles."""

    def __init__(
        self,
        est: Mapping[str, Any],
        links: Iterable[tuple[str, str, Mapping[str, Any]]],
        action_parents: Mapping[Uid, frozenset[Uid]],
        *,
        cache_size: int = 4096,
    ) -> None:
        """`est`: Cedar JSON policy set with pep's ids; `links`: (template id, link id, slot values)."""
        self._static: dict[str, Any] = dict(est.get("staticPolicies") or {})
        templates: dict[str, Any] = dict(est.get("templates") or {})
        self._templates = templates
        self._links: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self._action_parents = action_parents
        self._p_all: set[str] = set()
        self._p_eq: dict[Uid, set[str]] = {}
        self._p_in: dict[Uid, set[str]] = {}
        self._p_is: dict[str, set[str]] = {}
        self._p_is_in: dict[tuple[str, Uid], set[str]] = {}
        self._a_all: set[str] = set()
        self._a_in: dict[Uid, set[str]] = {}
        for pid, body in self._static.items():
            self._index(pid, body, {})
        for template_id, link_id, values in links:
            self._links[link_id] = (template_id, values)
            self._index(link_id, templates[template_id], values)
        self._cache: LRU[frozenset[str], cedarpy.PolicySet] = LRU(cache_size)
        self._slice_cache: LRU[tuple[Any, ...], frozenset[str]] = LRU(cache_size * 4)

    def __len__(self) -> int:
        return len(self._static) + len(self._links)

    def _index(self, pid: str, body: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        p = body.get("principal") or {"op": "All"}
        op = p.get("op")
        entity = scope_entity(p, values)
        if op == "All":
            self._p_all.add(pid)
        elif op == "==" and entity is not None:
            self._p_eq.setdefault(entity, set()).add(pid)
        elif op == "in" and entity is not None:
            self._p_in.setdefault(entity, set()).add(pid)
        elif op == "is" and isinstance(p.get("entity_type"), str):
            inner = p.get("in")
            in_entity = scope_entity(inner, values) if isinstance(inner, Mapping) else None
            if inner is None:
                self._p_is.setdefault(p["entity_type"], set()).add(pid)
            elif in_entity is not None:
                self._p_is_in.setdefault((p["entity_type"], in_entity), set()).add(pid)
            else:
                self._p_all.add(pid)
        else:
            self._p_all.add(pid)  # a form this index does not know: always evaluate
        a = body.get("action") or {"op": "All"}
        aop = a.get("op")
        targets: list[Uid] = []
        if aop == "==" or (aop == "in" and "entity" in a):
            u = parse_json_uid(a.get("entity"))
            targets = [u] if u is not None else []
        elif aop == "in" and isinstance(a.get("entities"), list):
            targets = [u for u in (parse_json_uid(x) for x in a["entities"]) if u is not None]
        if aop == "All" or not targets:
            self._a_all.add(pid)
        else:
            # `==` is indexed like `in` over the action itself: a superset, still exact
            # because Cedar then checks the constraint.
            for t in targets:
                self._a_in.setdefault(t, set()).add(pid)

    def slice_ids(self, principal: Uid, principal_ancestors: Iterable[Uid], action: Uid) -> frozenset[str]:
        ancestors = frozenset(principal_ancestors)
        key = (principal, ancestors, action)
        cached = self._slice_cache.get(key)
        if cached is not None:
            return cached
        actions = {action, *self._action_parents.get(action, ())}
        by_action = set(self._a_all)
        for a in actions:
            by_action |= self._a_in.get(a, set())
        by_principal = set(self._p_all)
        by_principal |= self._p_eq.get(principal, set())
        by_principal |= self._p_is.get(principal[0], set())
        for e in (principal, *ancestors):
            by_principal |= self._p_in.get(e, set())
            by_principal |= self._p_is_in.get((principal[0], e), set())
        ids = frozenset(by_action & by_principal)
        self._slice_cache.put(key, ids)
        return ids

    def template_of(self, pid: str) -> str | None:
        """The template a linked policy was made from; None for a static policy."""
        link = self._links.get(pid)
        return link[0] if link is not None else None

    def head(self, pid: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """A policy's EST (a link: its template's) and the link's slot values ({} for a static policy)."""
        if pid in self._static:
            return self._static[pid], {}
        template_id, values = self._links[pid]
        return self._templates[template_id], values

    def policy_set(self, ids: frozenset[str]) -> cedarpy.PolicySet:
        handle = self._cache.get(ids)
        if handle is None:
            statics = {i: self._static[i] for i in ids if i in self._static}
            links = [(i, *self._links[i]) for i in ids if i in self._links]
            used = {t for _, t, _ in links}
            est = {
                "staticPolicies": statics,
                "templates": {t: self._templates[t] for t in used},
                "templateLinks": [
                    {"templateId": t, "newId": i, "values": {k: link_value(v) for k, v in vals.items()}}
                    for i, t, vals in links
                ],
            }
            handle = cedarpy.PolicySet.from_json_str(json.dumps(est))
            self._cache.put(ids, handle)
        return handle


def scope_entity(scope: Mapping[str, Any], values: Mapping[str, Any]) -> Uid | None:
    """The entity a scope constraint names (a slot: the link's value), or None."""
    if "slot" in scope:
        return parse_json_uid(link_value(values.get(scope["slot"])))
    return parse_json_uid(scope.get("entity"))


def parse_uid_text(text: str) -> Uid | None:
    """`pep.uids.parse_uid`, None instead of ValueError."""
    try:
        return parse_uid(text)
    except ValueError:
        return None


def link_value(value: Any) -> Any:
    """A link slot value (`Type::"id"` or {type, id}) as {type, id}."""
    if isinstance(value, str) and (uid := parse_uid_text(value)) is not None:
        return {"type": uid[0], "id": uid[1]}
    return value


def action_parents(schema: cedarpy.Schema | None, entities: Iterable[dict[str, Any]]) -> dict[Uid, frozenset[Uid]]:
    """Each action's transitive action groups, from the schema (or stored Action entities)."""
    source: list[dict[str, Any]]
    if schema is not None:
        source = json.loads(str(cedarpy.Entities.from_json_str("[]", schema)))
    else:
        source = [e for e in entities if (u := parse_json_uid(e.get("uid"))) is not None and is_action_type(u[0])]
    direct: dict[Uid, list[Uid]] = {}
    for ent in source:
        uid = parse_json_uid(ent.get("uid"))
        if uid is not None:
            direct[uid] = [p for p in (parse_json_uid(x) for x in ent.get("parents") or ()) if p is not None]
    out: dict[Uid, frozenset[Uid]] = {}
    for uid in direct:
        seen: set[Uid] = set()
        stack = list(direct[uid])
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(direct.get(p, ()))
        out[uid] = frozenset(seen)
    return out
