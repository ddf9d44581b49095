"""The admin gRPC service (`pep.v1.Admin`): flip the kill switch now, without waiting for git.

Served on its own listener (`admin_listen`), loopback or a Unix socket unless configured
otherwise, never on the public port.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from pep._proto.pep.v1 import admin_pb2 as pb
from pep._proto.pep.v1 import admin_pb2_grpc as pb_grpc
from pep.audit.entry import utc_timestamp
from pep.controls.killswitch import MAX_ENTRIES, SCOPES, SOURCES, RuntimeKills
from pep.metrics import Metrics
from pep.policy.killswitch_file import ID_KINDS, KINDS, KillKind
from pep.policy.revoked_file import REVOKE_KINDS, STORED_PREFIX, revoke_kind
from pep.policy.snapshot import Snapshot

log = logging.getLogger(__name__)

# The proto enum mirrors KillKind: KILL_KIND_<NAME>.
KIND_NAMES: dict[int, str] = {pb.KillKind.Value(f"KILL_KIND_{k.name}"): k.value for k in KillKind}
KIND_VALUES: dict[str, Any] = {v: k for k, v in KIND_NAMES.items()}
# The proto enum RevokeKind: REVOKE_KIND_<KIND>.
REVOKE_NAMES: dict[int, str] = {pb.RevokeKind.Value(f"REVOKE_KIND_{k.upper()}"): k for k in REVOKE_KINDS}
REVOKE_VALUES: dict[str, Any] = {v: k for k, v in REVOKE_NAMES.items()}
MAX_REASON = 1024
MAX_ID = 1024
MAX_ACTOR = 256
# `before` may lie this far ahead (clock skew between the operator and pep), no further.
MAX_FUTURE_SECONDS = 300


def update_kill_gauge(metrics: Metrics, kills: RuntimeKills, snapshot: Snapshot | None) -> None:
    # killswitch.yaml is each replica's own (local); runtime entries are fleet-wide when kept in Redis.
    # Anomaly containment only ever disables agents.
    counts = {(kind, source, scope): 0 for kind in KINDS for source in ("file", "admin") for scope in SCOPES}
    counts.update({("agent", "anomaly", scope): 0 for scope in SCOPES})
    revoked = {(kind, source, scope): 0 for kind in REVOKE_KINDS for source in ("file", "admin") for scope in SCOPES}
    # From counts kept as entries change: this runs on every change, with up to MAX_ENTRIES entries.
    for (kind, source), n in kills.counts().items():
        if kind in KINDS:
            key = (kind, source if source in SOURCES else "admin", kills.scope)
            counts[key] = counts.get(key, 0) + n
        elif (revoked_kind := revoke_kind(kind)) is not None:
            revoked[(revoked_kind, "admin", kills.scope)] += n
    if snapshot is not None:
        ks = snapshot.killswitch
        counts[("all", "file", "local")] = int(ks.all)
        for id_kind in ID_KINDS:
            counts[(id_kind.value, "file", "local")] = len(ks.ids(id_kind))
    for (kind, source, scope), n in counts.items():
        metrics.killswitch_entries.labels(kind, source, scope).set(n)
    if snapshot is not None:
        rev = snapshot.killswitch.revoked
        revoked[("token", "file", "local")] = len(rev.tokens)
        for kind in ("agent", "user", "issuer"):
            revoked[(kind, "file", "local")] = len(rev.before(kind))
    for (kind, source, scope), n in revoked.items():
        metrics.revocations.labels(kind, source, scope).set(n)


class AdminService(pb_grpc.AdminServicer):
    def __init__(
        self,
        kills: RuntimeKills,
        current: Callable[[], Snapshot | None],
        metrics: Metrics,
        write_event: Callable[[dict[str, Any]], bool],
    ) -> None:
        self._kills = kills
        self._current = current
        self._metrics = metrics
        self._write_event = write_event

    def Disable(self, request: pb.DisableRequest, context: grpc.ServicerContext) -> pb.AdminResponse:
        kind = self._kind(request.kind, request.id, context)
        self._check_actor(request.actor, context)
        reason = self._reason(request.reason, context)
        self._check_room("disables", context)
        changed = self._kills.disable(kind, request.id, reason, request.actor)
        self._changed("disable", kind, request.id, reason, request.actor, changed)
        return pb.AdminResponse(changed=changed, status=self._status())

    def Enable(self, request: pb.EnableRequest, context: grpc.ServicerContext) -> pb.AdminResponse:
        kind = self._kind(request.kind, request.id, context)
        self._check_actor(request.actor, context)
        changed = self._kills.enable(kind, request.id)
        self._changed("enable", kind, request.id, "", request.actor, changed)
        return pb.AdminResponse(changed=changed, status=self._status())

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        return self._status()

    def Revoke(self, request: pb.RevokeRequest, context: grpc.ServicerContext) -> pb.AdminResponse:
        kind = self._revoke_kind(request.kind, request.id, context)
        self._check_actor(request.actor, context)
        reason = self._reason(request.reason, context)
        now = time.time()
        before = request.before or now
        if kind == "token":
            before = now  # a jti is revoked whenever it was issued
        elif not 0 < before <= now + MAX_FUTURE_SECONDS:  # NaN fails too
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "before must be Unix seconds, not in the future")
        self._check_room("entries", context)
        changed = self._kills.revoke(STORED_PREFIX + kind, request.id, before, reason, request.actor)
        self._changed("revoke", kind, request.id, reason, request.actor, changed, None if kind == "token" else before)
        return pb.AdminResponse(changed=changed, status=self._status())

    def Unrevoke(self, request: pb.UnrevokeRequest, context: grpc.ServicerContext) -> pb.AdminResponse:
        kind = self._revoke_kind(request.kind, request.id, context)
        self._check_actor(request.actor, context)
        changed = self._kills.enable(STORED_PREFIX + kind, request.id)
        self._changed("unrevoke", kind, request.id, "", request.actor, changed)
        return pb.AdminResponse(changed=changed, status=self._status())

    @staticmethod
    def _revoke_kind(value: int, id_: str, context: grpc.ServicerContext) -> str:
        kind = REVOKE_NAMES.get(value)
        if kind is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "kind must be token, agent, user or issuer")
        if not id_:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"an id is required to revoke a {kind}")
        if len(id_) > MAX_ID:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"id is longer than {MAX_ID} characters")
        assert kind is not None  # abort() raised above
        return kind

    def _check_room(self, what: str, context: grpc.ServicerContext) -> None:
        """Disables and revocations share one bound (MAX_ENTRIES) on the runtime entries."""
        if len(self._kills.view()) >= MAX_ENTRIES:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{MAX_ENTRIES} admin {what} are in force already: lift some, or list them in killswitch.yaml",
            )

    @staticmethod
    def _reason(text: str, context: grpc.ServicerContext) -> str:
        reason = text.strip()
        if not reason:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a reason is required")
        if len(reason) > MAX_REASON:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"reason is longer than {MAX_REASON} characters")
        return reason

    def _kind(self, value: int, id_: str, context: grpc.ServicerContext) -> str:
        kind = KIND_NAMES.get(value)
        if kind is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "kind must be agent, agent_group, user, issuer or all")
        if kind != "all" and not id_:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"an id is required to disable a {kind}")
        if kind == "all" and id_:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "`all` takes no id")
        if len(id_) > MAX_ID:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"id is longer than {MAX_ID} characters")
        assert kind is not None  # abort() raised above
        return kind

    @staticmethod
    def _check_actor(actor: str, context: grpc.ServicerContext) -> None:
        if len(actor) > MAX_ACTOR:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"actor is longer than {MAX_ACTOR} characters")

    def _changed(
        self, action: str, kind: str, id_: str, reason: str, actor: str, changed: bool, before: float | None = None
    ) -> None:
        update_kill_gauge(self._metrics, self._kills, self._current())
        event = {
            "schema": 1,
            "ts": utc_timestamp(time.time()),
            "event": "admin",
            "action": action,
            "kind": kind,
            "id": "" if kind == "all" else id_,
            "reason": reason,
            "actor": actor,
            "changed": changed,
        }
        if before is not None:
            event["before"] = utc_timestamp(before)
        if not self._write_event(event):
            log.error("admin event could not be written to the decision log: %s", event)
        log.warning("kill switch: %s %s %r (%s) by %r", action, kind, id_, reason or "-", actor or "-")

    def _status(self) -> pb.StatusResponse:
        entries = [
            pb.KillEntry(
                kind=KIND_VALUES[e.kind],
                id=e.id,
                reason=e.reason,
                source=e.source,
                since=e.since,
                actor=e.actor,
                scope=self._kills.scope,
            )
            for e in self._kills.entries()
            if e.kind in KINDS
        ]
        snapshot = self._current()
        if snapshot is not None:
            ks = snapshot.killswitch
            if ks.all:
                entries.append(
                    pb.KillEntry(kind=pb.KILL_KIND_ALL, source="file", reason="killswitch.yaml", scope="local")
                )
            for kind in ID_KINDS:
                entries += [
                    pb.KillEntry(kind=KIND_VALUES[kind], id=i, source="file", reason="killswitch.yaml", scope="local")
                    for i in sorted(ks.ids(kind))
                ]
        version = snapshot.version if snapshot else ""
        return pb.StatusResponse(entries=entries, policy_version=version, revocations=self._revocations(snapshot))

    def _revocations(self, snapshot: Snapshot | None) -> list[pb.Revocation]:
        out = [
            pb.Revocation(
                kind=REVOKE_VALUES[kind],
                id=e.id,
                before=0 if kind == "token" else e.cutoff,
                reason=e.reason,
                source=e.source,
                since=e.since,
                actor=e.actor,
                scope=self._kills.scope,
            )
            for e in self._kills.entries()
            if (kind := revoke_kind(e.kind)) is not None
        ]
        if snapshot is not None:
            rev = snapshot.killswitch.revoked
            rows = [("token", j, 0.0) for j in sorted(rev.tokens)]
            rows += [(k, i, t) for k in ("agent", "user", "issuer") for i, t in sorted(rev.before(k).items())]
            out += [
                pb.Revocation(
                    kind=REVOKE_VALUES[k], id=i, before=t, source="file", reason="killswitch.yaml", scope="local"
                )
                for k, i, t in rows
            ]
        return out
