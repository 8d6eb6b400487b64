"""Where security events live: a table and how its columns map to the fields the
detectors read (``ip``, ``user``, ``success``, ``key``, ``status``, ``severity``...).
A field is a column, or ``column.key[.key...]``, a path into a json/jsonb column.
Built in: the sandbox's tables, and Supabase's own ``auth.audit_log_entries`` (its
JSON payload holds the action and the actor; the address is ``ip_address``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class SourceMapping(BaseModel):
    table: str = Field(description="schema.table (split on the first dot; names are quoted).")
    time_column: str = Field("created_at", description="The event's own time: windows are evaluated on it.")
    fields: dict[str, str] = Field(description="field -> column or column.key path into a json column.")

    @field_validator("table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        return value if "." in value else f"public.{value}"

    @property
    def schema_table(self) -> tuple[str, str]:
        schema, table = self.table.split(".", 1)
        return schema, table


DEFAULT_SOURCES: dict[str, SourceMapping] = {
    "auth": SourceMapping(table="public.auth_events", fields={"user": "email", "ip": "ip", "success": "success", "user_agent": "user_agent"}),
    "api": SourceMapping(table="public.api_requests", fields={"key": "api_key", "ip": "ip", "path": "path", "status": "status"}),
    "security": SourceMapping(table="public.security_events", fields={"severity": "severity", "type": "type", "details": "details"}),
}

SUPABASE_AUTH = SourceMapping(
    table="auth.audit_log_entries",
    fields={"user": "payload.actor_username", "action": "payload.action", "ip": "ip_address"},
)
