"""The audit log's table, its indexes, and the database triggers that keep it append-only.

See agentdash/models/audit.py for why PostgreSQL refuses UPDATE and DELETE while SQLite
refuses only UPDATE.
"""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

APPEND_ONLY_SQL = {
    "postgresql": [
        """
        CREATE FUNCTION agentdash_auditevent_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION USING
                MESSAGE = 'agentdash_auditevent is append-only: ' || TG_OP || ' refused',
                ERRCODE = 'restrict_violation';
        END;
        $$
        """,
        """
        CREATE TRIGGER agentdash_auditevent_append_only
        BEFORE UPDATE OR DELETE ON agentdash_auditevent
        FOR EACH ROW EXECUTE FUNCTION agentdash_auditevent_refuse_change()
        """,
    ],
    "sqlite": [
        """
        CREATE TRIGGER agentdash_auditevent_no_update
        BEFORE UPDATE ON agentdash_auditevent
        BEGIN
            SELECT RAISE(ABORT, 'agentdash_auditevent is append-only: UPDATE refused');
        END
        """,
    ],
}

DROP_SQL = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS agentdash_auditevent_append_only ON agentdash_auditevent",
        "DROP FUNCTION IF EXISTS agentdash_auditevent_refuse_change()",
    ],
    "sqlite": ["DROP TRIGGER IF EXISTS agentdash_auditevent_no_update"],
}


def _run(statements: dict[str, list[str]], schema_editor: BaseDatabaseSchemaEditor) -> None:
    # Other backends get no trigger; the application's guards still hold there.
    # params=None: the SQL is passed as is, with no placeholder parsing.
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql, params=None)


def create_triggers(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _run(APPEND_ONLY_SQL, schema_editor)


def drop_triggers(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _run(DROP_SQL, schema_editor)


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="AuditEvent",
            fields=[
                ("seq", models.BigIntegerField(primary_key=True, serialize=False)),
                ("created_at", models.DateTimeField()),
                ("actor", models.CharField(max_length=200)),
                ("session_id", models.BigIntegerField(blank=True, null=True)),
                ("tool_call_id", models.BigIntegerField(blank=True, null=True)),
                ("kind", models.CharField(max_length=64)),
                ("payload", models.JSONField(default=dict)),
                ("prev_hash", models.CharField(max_length=64)),
                ("hash", models.CharField(max_length=64)),
            ],
            options={
                "ordering": ["seq"],
                "indexes": [
                    models.Index(
                        condition=models.Q(("session_id__isnull", False)),
                        fields=["session_id", "seq"],
                        name="audit_session_seq_idx",
                    ),
                    models.Index(
                        condition=models.Q(("tool_call_id__isnull", False)),
                        fields=["tool_call_id", "seq"],
                        name="audit_toolcall_seq_idx",
                    ),
                    models.Index(fields=["kind", "seq"], name="audit_kind_seq_idx"),
                    models.Index(fields=["actor", "seq"], name="audit_actor_seq_idx"),
                    models.Index(fields=["created_at"], name="audit_created_at_idx"),
                ],
            },
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
