from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RevokeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVOKE_KIND_UNSPECIFIED: _ClassVar[RevokeKind]
    REVOKE_KIND_TOKEN: _ClassVar[RevokeKind]
    REVOKE_KIND_AGENT: _ClassVar[RevokeKind]
    REVOKE_KIND_USER: _ClassVar[RevokeKind]
    REVOKE_KIND_ISSUER: _ClassVar[RevokeKind]

class KillKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KILL_KIND_UNSPECIFIED: _ClassVar[KillKind]
    KILL_KIND_AGENT: _ClassVar[KillKind]
    KILL_KIND_AGENT_GROUP: _ClassVar[KillKind]
    KILL_KIND_USER: _ClassVar[KillKind]
    KILL_KIND_ISSUER: _ClassVar[KillKind]
    KILL_KIND_ALL: _ClassVar[KillKind]
REVOKE_KIND_UNSPECIFIED: RevokeKind
REVOKE_KIND_TOKEN: RevokeKind
REVOKE_KIND_AGENT: RevokeKind
REVOKE_KIND_USER: RevokeKind
REVOKE_KIND_ISSUER: RevokeKind
KILL_KIND_UNSPECIFIED: KillKind
KILL_KIND_AGENT: KillKind
KILL_KIND_AGENT_GROUP: KillKind
KILL_KIND_USER: KillKind
KILL_KIND_ISSUER: KillKind
KILL_KIND_ALL: KillKind

class RevokeRequest(_message.Message):
    __slots__ = ("kind", "id", "before", "reason", "actor")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    kind: RevokeKind
    id: str
    before: float
    reason: str
    actor: str
    def __init__(self, kind: _Optional[_Union[RevokeKind, str]] = ..., id: _Optional[str] = ..., before: _Optional[float] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class UnrevokeRequest(_message.Message):
    __slots__ = ("kind", "id", "actor")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    kind: RevokeKind
    id: str
    actor: str
    def __init__(self, kind: _Optional[_Union[RevokeKind, str]] = ..., id: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class Revocation(_message.Message):
    __slots__ = ("kind", "id", "before", "reason", "source", "since", "actor", "scope")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    kind: RevokeKind
    id: str
    before: float
    reason: str
    source: str
    since: float
    actor: str
    scope: str
    def __init__(self, kind: _Optional[_Union[RevokeKind, str]] = ..., id: _Optional[str] = ..., before: _Optional[float] = ..., reason: _Optional[str] = ..., source: _Optional[str] = ..., since: _Optional[float] = ..., actor: _Optional[str] = ..., scope: _Optional[str] = ...) -> None: ...

class DisableRequest(_message.Message):
    __slots__ = ("kind", "id", "reason", "actor")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    kind: KillKind
    id: str
    reason: str
    actor: str
    def __init__(self, kind: _Optional[_Union[KillKind, str]] = ..., id: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class EnableRequest(_message.Message):
    __slots__ = ("kind", "id", "actor")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    kind: KillKind
    id: str
    actor: str
    def __init__(self, kind: _Optional[_Union[KillKind, str]] = ..., id: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class AdminResponse(_message.Message):
    __slots__ = ("changed", "status")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    status: StatusResponse
    def __init__(self, changed: _Optional[bool] = ..., status: _Optional[_Union[StatusResponse, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KillEntry(_message.Message):
    __slots__ = ("kind", "id", "reason", "source", "since", "actor", "scope")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    kind: KillKind
    id: str
    reason: str
    source: str
    since: float
    actor: str
    scope: str
    def __init__(self, kind: _Optional[_Union[KillKind, str]] = ..., id: _Optional[str] = ..., reason: _Optional[str] = ..., source: _Optional[str] = ..., since: _Optional[float] = ..., actor: _Optional[str] = ..., scope: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("entries", "policy_version", "revocations")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[KillEntry]
    policy_version: str
    revocations: _containers.RepeatedCompositeFieldContainer[Revocation]
    def __init__(self, entries: _Optional[_Iterable[_Union[KillEntry, _Mapping]]] = ..., policy_version: _Optional[str] = ..., revocations: _Optional[_Iterable[_Union[Revocation, _Mapping]]] = ...) -> None: ...
