"""The API's contract: an OpenAPI 3.1 document, served at ``/openapi.json`` and checked against the
live API by schemathesis in the tests. Enumerations come from the code's own types, so the
document cannot drift from what the handlers accept.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from gateway.audit import ACTIONS
from gateway.lists import EntryKind, ListColour
from gateway.provisioning import FORMATS, MAX_PAGE

COLOURS = [c.value for c in ListColour]
KINDS = [k.value for k in EntryKind]
IMEI_PATTERN = "^[0-9]{14,16}$"
ENTRY_PATTERN = "^(imei:[0-9]{14,15}|tac:[0-9]{8}|range:[0-9]{14,15}-[0-9]{14,15}|pair:[0-9]{14,15}:[0-9]{6,15})$"

VALUE_PATTERN = "^([0-9]{8}|[0-9]{14,15}|[0-9]{14,15}-[0-9]{14,15})$"
_NULLABLE_STR = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Bad input; invalid-params names the field",
        401: "No bearer token, or not a valid one",
        403: "The token lacks the role this needs (read, or write)",
        404: "Not found",
        409: "The entry exists",
        413: "The file is larger than api.max_import_bytes",
        415: "Unsupported body media type",
    }
    return {
        str(s): {"description": text[s],
                 "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        for s in (*statuses, 401, 403)
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    if schema.get("type") == "string" and "enum" not in schema:
        schema = {"minLength": 1, **schema}  # an empty parameter is refused, not ignored
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


_IMEI_PARAM = _path("imei", {"type": "string", "pattern": IMEI_PATTERN},
                    "IMEI: 14 digits, 15 with its check digit, or a 16-digit IMEISV")
_ENTRY_PARAMS = [
    _path("list", {"type": "string", "enum": COLOURS}, "black, grey or white"),
    _path("entry", {"type": "string", "pattern": ENTRY_PATTERN},
          "imei:IMEI, tac:TAC, range:FIRST-LAST or pair:IMEI:IMSI"),
]

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "invalid-params": {
                "type": "array",
                "items": {"type": "object", "required": ["name", "reason"],
                          "properties": {"name": {"type": "string"},
                                         "reason": {"type": "string"}}},
            },
        },
    },
    "Entry": {
        "type": "object",
        "required": ["list", "kind", "value", "imsi", "reason", "created", "updated", "source"],
        "properties": {
            "list": {"type": "string", "enum": COLOURS},
            "kind": {"type": "string", "enum": KINDS},
            "value": {"type": "string", "description": "14-digit IMEI, FIRST-LAST, or TAC"},
            "imsi": {**_NULLABLE_STR, "description": "pairs only; masked without the pii role"},
            "reason": {"type": "string"},
            "created": _TIME,
            "updated": _TIME,
            "source": {**_NULLABLE_STR,
                       "description": "null: manual; else the lists.import_files file"},
        },
    },
    "NewEntry": {
        "type": "object",
        "additionalProperties": False,
        "required": ["list", "kind", "value"],
        "properties": {
            "list": {"type": "string", "enum": COLOURS},
            "kind": {"type": "string", "enum": KINDS},
            "value": {"type": "string", "pattern": VALUE_PATTERN,
                      "description": "imei, pair: IMEI; tac: TAC; range: FIRST-LAST"},
            "imsi": {"type": ["string", "null"], "pattern": "^([0-9]{6,15})?$",
                     "description": "pair only"},
            "reason": {"type": "string"},
            "created": {"type": "string", "format": "date-time"},
            "updated": {"type": "string", "format": "date-time"},
        },
    },
    "EntryUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {"type": "string"}},
    },
    "EntryPage": {
        "type": "object",
        "required": ["version", "entries", "next_cursor"],
        "properties": {
            "version": {"type": "integer"},
            "entries": {"type": "array", "items": _ref("Entry")},
            "next_cursor": {**_NULLABLE_STR, "description": "null on the last page"},
        },
    },
    "ImeiEntries": {
        "type": "object",
        "required": ["imei", "entries"],
        "properties": {"imei": {"type": "string"},
                       "entries": {"type": "array", "items": _ref("Entry")}},
    },
    "Check": {
        "type": "object",
        "description": "the same JSON as `eir-gateway check --json`",
        "required": ["input_valid", "imei", "imsi", "result_code", "result_avp", "answer",
                     "equipment_status", "monitor_mode", "enforcement", "decided_by",
                     "reasons", "list_entries", "tac", "registry", "clone_detection"],
        "properties": {
            "input_valid": {"type": "boolean"},
            "imei": {"type": ["object", "null"]},
            "imsi": _NULLABLE_STR,
            "result_code": {"type": "integer"},
            "result_avp": {"type": "string", "enum": ["Result-Code", "Experimental-Result-Code"]},
            "answer": {"type": "string"},
            "equipment_status": {"type": ["string", "null"],
                                 "enum": ["WHITELISTED", "BLACKLISTED", "GREYLISTED", None]},
            "monitor_mode": {"type": "boolean"},
            "enforcement": _NULLABLE_STR,
            "decided_by": {"type": "string"},
            "reasons": {"type": "array", "items": {
                "type": "object", "required": ["reason", "detail"],
                "properties": {"reason": {"type": "string"}, "detail": {"type": "string"}}}},
            "list_entries": {"type": "array", "items": {"type": "object"}},
            "tac": {"type": ["object", "null"]},
            "registry": {"type": ["object", "string", "null"]},
            "clone_detection": _NULLABLE_STR,
        },
    },
    "Tac": {
        "type": "object",
        "required": ["tac", "manufacturer", "model"],
        "properties": {"tac": {"type": "string"}, "manufacturer": {"type": "string"},
                       "model": {"type": "string"}},
    },
    "Observations": {
        "type": "object",
        "required": ["imei", "enabled", "observations"],
        "properties": {
            "imei": {"type": "string"},
            "enabled": {"type": "boolean"},
            "observations": {"type": "array", "items": {
                "type": "object", "required": ["imsi", "first_seen", "last_seen", "count"],
                "properties": {"imsi": {"type": "string"}, "first_seen": {"type": "string"},
                               "last_seen": {"type": "string"},
                               "count": {"type": "integer"}}}},
        },
    },
    "CloneDetection": {
        "type": "object",
        "required": ["imei", "enabled", "source", "threshold", "window_seconds",
                     "distinct_imsis", "suspected", "imsis"],
        "properties": {
            "imei": {"type": "string"},
            "enabled": {"type": "boolean"},
            "source": {"type": "string", "enum": ["disabled", "tracker", "observation log",
                                                  "tracker and observation log"]},
            "threshold": {"type": "integer"},
            "window_seconds": {"type": "number"},
            "distinct_imsis": {"type": "integer"},
            "suspected": {"type": "boolean"},
            "imsis": {"type": "array", "items": {
                "type": "object", "required": ["imsi", "last_seen"],
                "properties": {"imsi": {"type": "string"}, "last_seen": {"type": "string"}}}},
        },
    },
    "AuditRecord": {
        "type": "object",
        "required": ["seq", "at", "actor", "action", "target", "before", "after"],
        "properties": {
            "seq": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "actor": {"type": "string", "description": "api:TOKEN-NAME or cli:USER"},
            "action": {"type": "string", "enum": list(ACTIONS)},
            "target": {"type": "string"},
            "before": {"type": ["object", "null"]},
            "after": {"type": ["object", "null"]},
        },
    },
    "AuditPage": {
        "type": "object",
        "required": ["records", "next_after"],
        "properties": {"records": {"type": "array", "items": _ref("AuditRecord")},
                       "next_after": {"type": ["integer", "null"]}},
    },
    "Progress": {
        "type": "object",
        "required": ["done", "total", "percent", "rows", "rows_per_second", "elapsed_seconds",
                     "eta_seconds"],
        "properties": {
            "done": {"type": "integer", "description": "bytes of the file read"},
            "total": {"type": "integer"},
            "percent": {"type": "number"},
            "rows": {"type": "integer"},
            "rows_per_second": {"type": "number"},
            "elapsed_seconds": {"type": "number"},
            "eta_seconds": {"type": ["number", "null"]},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "state", "format", "file", "actor", "created", "finished", "entries",
                     "version", "error", "progress"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
            "format": {"type": "string", "enum": list(FORMATS)},
            "file": {"type": "string"},
            "actor": {"type": "string"},
            "created": {"type": "string"},
            "finished": _NULLABLE_STR,
            "entries": {"type": ["integer", "null"]},
            "version": {"type": ["integer", "null"]},
            "error": _NULLABLE_STR,
            "progress": _ref("Progress"),
        },
    },
}


@cache
def document() -> dict[str, Any]:
    limit = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "eir-gateway provisioning and query API",
            "version": "1.0.0",
            "description": "Operator black/grey/white lists, checks, TAC records, observations, "
                           "clone-detection state and the audit log of an EIR gateway. Errors are "
                           "RFC 9457 problem+json. Roles: read (GET), write (changes), pii (IMSIs "
                           "in clear).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "security": [{"bearer": []}],
        "paths": {
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
            "/v1/lists/entries": {
                "get": {
                    "operationId": "listEntries", "summary": "Entries in key order, a page at a time",
                    "parameters": [
                        _query("list", {"type": "string", "enum": COLOURS}, "only this list"),
                        _query("kind", {"type": "string", "enum": KINDS}, "only this kind"),
                        _query("limit", limit, "entries per page"),
                        _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                    ],
                    "responses": {"200": _json(_ref("EntryPage"), "A page"), **_problems(400)},
                },
                "post": {
                    "operationId": "createEntry", "summary": "Add an entry (audited)",
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("NewEntry")}}},
                    "responses": {"201": _json(_ref("Entry"), "Created"),
                                  **_problems(400, 409, 415)},
                },
            },
            "/v1/lists/{list}/entries/{entry}": {
                "parameters": _ENTRY_PARAMS,
                "get": {"operationId": "getEntry", "summary": "One entry",
                        "responses": {"200": _json(_ref("Entry"), "The entry"),
                                      **_problems(400, 404)}},
                "put": {
                    "operationId": "putEntry", "summary": "Create or update (reason) an entry",
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("EntryUpdate")}}},
                    "responses": {"200": _json(_ref("Entry"), "Updated"),
                                  "201": _json(_ref("Entry"), "Created"),
                                  **_problems(400, 415)},
                },
                "delete": {"operationId": "deleteEntry", "summary": "Remove an entry (audited)",
                           "responses": {"204": {"description": "Removed"},
                                         **_problems(400, 404)}},
            },
            "/v1/lists/export": {"get": {
                "operationId": "exportLists", "summary": "Every entry, streamed",
                "parameters": [_query("format", {"type": "string", "enum": list(FORMATS)},
                                      "csv (default) or jsonl")],
                "responses": {"200": {"description": "The export", "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/jsonl": {"schema": {"type": "string"}}}},
                    **_problems(400)},
            }},
            "/v1/lists/imports": {"post": {
                "operationId": "importLists",
                "summary": "Import a file as a job: all rows or none, progress at /v1/jobs/{id}",
                "parameters": [
                    _query("format", {"type": "string", "enum": list(FORMATS)},
                           "default: from the Content-Type"),
                    _query("file", {"type": "string"}, "a name for the job and audit log"),
                ],
                "requestBody": {"required": True, "content": {
                    "text/csv": {"schema": {"type": "string", "minLength": 1}},
                    "application/jsonl": {"schema": {"type": "string", "minLength": 1}}}},
                "responses": {"202": _json(_ref("Job"), "The job, queued"),
                              **_problems(400, 413, 415)},
            }},
            "/v1/jobs": {"get": {
                "operationId": "listJobs", "summary": "Recent import jobs",
                "responses": {"200": _json({"type": "object", "required": ["jobs"],
                                            "properties": {"jobs": {"type": "array",
                                                                    "items": _ref("Job")}}},
                                           "Jobs"), **_problems()}}},
            "/v1/jobs/{job}": {"get": {
                "operationId": "getJob", "summary": "An import job and its progress",
                "parameters": [_path("job", {"type": "string"}, "job id")],
                "responses": {"200": _json(_ref("Job"), "The job"), **_problems(404)}}},
            "/v1/checks/{imei}": {"get": {
                "operationId": "check", "summary": "The decision and every reason behind it",
                "parameters": [
                    _path("imei", {"type": "string", "minLength": 1, "maxLength": 64},
                          "as received in S13 (a malformed one is a valid check)"),
                    _query("imsi", {"type": "string", "pattern": "^[0-9]{5,15}$"}, "IMSI"),
                    {"name": "sv", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Software-Version; not 2 digits: answered 5004"},
                ],
                "responses": {"200": _json(_ref("Check"), "The decision"), **_problems(400)}}},
            "/v1/tacs/{tac}": {"get": {
                "operationId": "getTac", "summary": "The TAC record of a TAC or an IMEI",
                "parameters": [_path("tac", {"type": "string", "pattern": "^[0-9]{8}$|^[0-9]{14,16}$"},
                                     "8-digit TAC or an IMEI")],
                "responses": {"200": _json(_ref("Tac"), "The record"), **_problems(400, 404)}}},
            "/v1/imeis/{imei}/list-entries": {"get": {
                "operationId": "imeiEntries", "summary": "Every list entry an IMEI matches",
                "parameters": [_IMEI_PARAM],
                "responses": {"200": _json(_ref("ImeiEntries"), "Entries"), **_problems(400)}}},
            "/v1/imeis/{imei}/observations": {"get": {
                "operationId": "imeiObservations",
                "summary": "IMSIs seen with an IMEI (first, last seen, count)",
                "parameters": [_IMEI_PARAM],
                "responses": {"200": _json(_ref("Observations"), "History"), **_problems(400)}}},
            "/v1/imeis/{imei}/clone-detection": {"get": {
                "operationId": "imeiCloneDetection",
                "summary": "IMSIs counted within the clone-detection window",
                "parameters": [_IMEI_PARAM],
                "responses": {"200": _json(_ref("CloneDetection"), "State"), **_problems(400)}}},
            "/v1/audit": {"get": {
                "operationId": "audit", "summary": "The audit log, oldest first",
                "parameters": [
                    _query("after", {"type": "integer", "minimum": 0, "maximum": 2**62},
                           "records after this seq"),
                    _query("limit", limit, "records per page"),
                    _query("actor", {"type": "string"}, "api:NAME or cli:USER"),
                    _query("action", {"type": "string", "enum": list(ACTIONS)}, "action"),
                    _query("target", {"type": "string"}, "LIST/KIND:VALUE"),
                    _query("since", {"type": "string", "format": "date-time"}, "at or after"),
                    _query("until", {"type": "string", "format": "date-time"}, "before"),
                ],
                "responses": {"200": _json(_ref("AuditPage"), "Records"), **_problems(400)}}},
        },
    }
