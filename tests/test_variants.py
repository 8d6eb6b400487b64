"""The "variants" database loads and holds what it promises: every key kind, quoted
names, another schema, a partitioned table, an enum, a generated column, a view, a sequence."""

from __future__ import annotations

from tests.conftest import Platform


def test_variants_schema_has_every_kind_of_key_and_name(variants: Platform) -> None:
    with variants.connect() as conn:
        keys = dict(
            conn.execute(
                """
                SELECT n.nspname || '.' || c.relname,
                       coalesce((SELECT string_agg(format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
                                 FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey)
                                 WHERE k.conrelid = c.oid AND k.contype = 'p'), 'none')
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname IN ('public', 'app')
                """
            ).fetchall()
        )
        assert keys["public.users"] == "uuid"
        assert keys["public.user_sessions"] == "text"
        assert keys["public.market_data"] == "text,timestamp with time zone"
        assert keys["public.system_logs"] == "none"
        assert keys["app.User"] == "text" and keys["app.order"] == "text,integer" and keys["app.audit log"] == "bigint"
        kinds = dict(conn.execute("SELECT c.relkind, count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'app') GROUP BY 1").fetchall())
        assert kinds.get("p") == 1 and kinds.get("v") == 1 and kinds.get("S", 0) >= 1
        assert conn.execute("SELECT count(*) FROM pg_type WHERE typname = 'alert_condition' AND typtype = 'e'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE is_generated = 'ALWAYS'").fetchone()[0] == 1
        rows = conn.execute("SELECT (SELECT count(*) FROM market_data_before), (SELECT count(*) FROM market_data_recent)").fetchone()
        assert rows[0] > 0 and rows[1] > 0
        assert conn.execute('SELECT count(*) FROM app."recent orders"').fetchone()[0] > 0
