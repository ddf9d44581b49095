from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ALLOW: _ClassVar[Decision]
    DECISION_DENY: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_DENY: Decision

class EntityRef(_message.Message):
    __slots__ = ("type", "id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    type: str
    id: str
    def __init__(self, type: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("type", "id", "attributes", "parents")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    type: str
    id: str
    attributes: _struct_pb2.Struct
    parents: _containers.RepeatedCompositeFieldContainer[EntityRef]
    def __init__(self, type: _Optional[str] = ..., id: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parents: _Optional[_Iterable[_Union[EntityRef, _Mapping]]] = ...) -> None: ...

class AuthorizeRequest(_message.Message):
    __slots__ = ("token", "dpop_proof", "http_method", "http_uri", "client_cert_thumbprint", "action", "resource", "context", "request_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DPOP_PROOF_FIELD_NUMBER: _ClassVar[int]
    HTTP_METHOD_FIELD_NUMBER: _ClassVar[int]
    HTTP_URI_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERT_THUMBPRINT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    dpop_proof: str
    http_method: str
    http_uri: str
    client_cert_thumbprint: str
    action: str
    resource: Resource
    context: _struct_pb2.Struct
    request_id: str
    def __init__(self, token: _Optional[str] = ..., dpop_proof: _Optional[str] = ..., http_method: _Optional[str] = ..., http_uri: _Optional[str] = ..., client_cert_thumbprint: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ("decision", "reason", "policies", "errors", "decision_id", "policy_version", "agent", "on_behalf_of", "delegation_chain", "dpop_nonce")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_CHAIN_FIELD_NUMBER: _ClassVar[int]
    DPOP_NONCE_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    reason: str
    policies: _containers.RepeatedScalarFieldContainer[str]
    errors: _containers.RepeatedScalarFieldContainer[str]
    decision_id: str
    policy_version: str
    agent: str
    on_behalf_of: str
    delegation_chain: _containers.RepeatedScalarFieldContainer[str]
    dpop_nonce: str
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[str] = ..., policies: _Optional[_Iterable[str]] = ..., errors: _Optional[_Iterable[str]] = ..., decision_id: _Optional[str] = ..., policy_version: _Optional[str] = ..., agent: _Optional[str] = ..., on_behalf_of: _Optional[str] = ..., delegation_chain: _Optional[_Iterable[str]] = ..., dpop_nonce: _Optional[str] = ...) -> None: ...

class Check(_message.Message):
    __slots__ = ("action", "resource", "context", "request_id")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    action: str
    resource: Resource
    context: _struct_pb2.Struct
    request_id: str
    def __init__(self, action: _Optional[str] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class AuthorizeBatchRequest(_message.Message):
    __slots__ = ("token", "dpop_proof", "http_method", "http_uri", "client_cert_thumbprint", "checks", "request_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DPOP_PROOF_FIELD_NUMBER: _ClassVar[int]
    HTTP_METHOD_FIELD_NUMBER: _ClassVar[int]
    HTTP_URI_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERT_THUMBPRINT_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    dpop_proof: str
    http_method: str
    http_uri: str
    client_cert_thumbprint: str
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    request_id: str
    def __init__(self, token: _Optional[str] = ..., dpop_proof: _Optional[str] = ..., http_method: _Optional[str] = ..., http_uri: _Optional[str] = ..., client_cert_thumbprint: _Optional[str] = ..., checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class AuthorizeBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[AuthorizeResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[AuthorizeResponse, _Mapping]]] = ...) -> None: ...
