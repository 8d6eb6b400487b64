-- "variants": a platform database unlike the sandbox, as real schemas grow (issue 10).
-- The tables of §0 keep only the columns §0 names; everything else differs:
--   keys    uuid (users, user_alerts), text (user_sessions), composite (market_data,
--           app."order"), none (system_logs)
--   names   mixed case (app."User", "createdAt"), reserved words (app."order", "user",
--           "select", "when"), a space (app."audit log", "placed at")
--   layout  a non-public schema (app), a partitioned table (market_data), an enum,
--           a generated column, a view, a sequence
-- Deterministic: every value is arithmetic on the row number and :anchor (the data's
-- "now"), substituted by sandbox.platform.load_variants. Small: a few thousand rows.

CREATE TYPE alert_condition AS ENUM ('above', 'below', 'change_pct');

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    email_domain  text GENERATED ALWAYS AS (split_part(email, '@', 2)) STORED
);

CREATE TABLE user_alerts (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id),
    symbol       text NOT NULL,
    condition    alert_condition NOT NULL,
    created_at   timestamptz NOT NULL,
    resolved     boolean NOT NULL DEFAULT false,
    resolved_at  timestamptz,
    archived     boolean NOT NULL DEFAULT false
);
CREATE INDEX user_alerts_user_created ON user_alerts (user_id, created_at DESC);

CREATE TABLE market_data (
    symbol       text NOT NULL,
    "timestamp"  timestamptz NOT NULL,
    price        numeric(20, 8) NOT NULL,
    PRIMARY KEY (symbol, "timestamp")
) PARTITION BY RANGE ("timestamp");
CREATE TABLE market_data_before PARTITION OF market_data FOR VALUES FROM (MINVALUE) TO (:anchor::timestamptz - interval '3 days');
CREATE TABLE market_data_recent PARTITION OF market_data DEFAULT;

CREATE TABLE user_sessions (
    token_hash  text PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX user_sessions_expires ON user_sessions (expires_at);

CREATE TABLE system_logs (  -- no primary key: an append-only log
    created_at  timestamptz NOT NULL,
    level       text NOT NULL,
    message     text NOT NULL
);

CREATE SCHEMA app;

CREATE TABLE app."User" (
    "id"            text PRIMARY KEY,
    "emailAddress"  text NOT NULL,
    "createdAt"     timestamptz NOT NULL
);

CREATE TABLE app."order" (
    "user"      text NOT NULL REFERENCES app."User" ("id"),
    "select"    integer NOT NULL,
    "placed at" timestamptz NOT NULL,
    PRIMARY KEY ("user", "select")
);

CREATE SEQUENCE app."audit seq";
CREATE TABLE app."audit log" (
    "id"    bigint PRIMARY KEY DEFAULT nextval('app."audit seq"'),
    "when"  timestamptz NOT NULL,
    "what"  text NOT NULL
);
ALTER SEQUENCE app."audit seq" OWNED BY app."audit log"."id";

-- A percent sign in names: psycopg reads % as a placeholder, also in quoted names
CREATE TABLE app."usage %" (
    "id"    bigint PRIMARY KEY,
    "cpu%"  numeric NOT NULL,
    "at"    timestamptz NOT NULL
);

CREATE VIEW app."recent orders" AS
    SELECT o."user", o."select", o."placed at" FROM app."order" o
    WHERE o."placed at" > :anchor::timestamptz - interval '7 days';

INSERT INTO users (id, email, created_at)
SELECT md5('user-' || i)::uuid, 'user' || i || '@example.test', :anchor::timestamptz - make_interval(days => 1 + i % 400)
FROM generate_series(1, 300) AS i;

-- A third resolved, over 120 days: some resolved more than 30 days ago.
INSERT INTO user_alerts (id, user_id, symbol, condition, created_at, resolved, resolved_at)
SELECT md5('alert-' || i)::uuid,
       md5('user-' || (1 + (i * 7) % 300))::uuid,
       (ARRAY['BTC', 'ETH', 'SOL', 'XRP'])[1 + i % 4],
       (ARRAY['above', 'below', 'change_pct'])[1 + i % 3]::alert_condition,
       :anchor::timestamptz - make_interval(hours => 1 + (i * 37) % (120 * 24)),
       i % 3 = 0,
       CASE WHEN i % 3 = 0 THEN :anchor::timestamptz - make_interval(hours => 1 + (i * 37) % (120 * 24)) + interval '30 minutes' END
FROM generate_series(1, 1500) AS i;

-- 8 symbols, one price an hour for 10 days: both partitions hold rows.
INSERT INTO market_data (symbol, "timestamp", price)
SELECT 'SYM' || (i % 8), :anchor::timestamptz - make_interval(hours => i / 8), round((100 + i % 997)::numeric / 3, 8)
FROM generate_series(0, 8 * 240 - 1) AS i;

-- Sessions expiring from 10 days ago to 10 days ahead: about half expired.
INSERT INTO user_sessions (token_hash, user_id, created_at, expires_at)
SELECT md5('session-' || i), md5('user-' || (1 + (i * 11) % 300))::uuid,
       :anchor::timestamptz - make_interval(days => 11),
       :anchor::timestamptz - make_interval(days => 10) + make_interval(mins => (i * 53) % (20 * 1440))
FROM generate_series(1, 800) AS i;

-- Logs over 180 days: half older than §4.5's 90 days.
INSERT INTO system_logs (created_at, level, message)
SELECT :anchor::timestamptz - make_interval(secs => (i * 15551) % (180 * 86400)),
       (ARRAY['INFO', 'WARN', 'ERROR'])[1 + i % 3], 'event #' || i
FROM generate_series(1, 2000) AS i;

INSERT INTO app."User" ("id", "emailAddress", "createdAt")
SELECT 'c' || lpad(to_hex(i * 7919), 8, '0'), 'user' || i || '@example.test', :anchor::timestamptz - make_interval(days => i % 200)
FROM generate_series(1, 200) AS i;

INSERT INTO app."order" ("user", "select", "placed at")
SELECT 'c' || lpad(to_hex((1 + i % 200) * 7919), 8, '0'), i, :anchor::timestamptz - make_interval(hours => (i * 13) % (60 * 24))
FROM generate_series(1, 1000) AS i;

INSERT INTO app."audit log" ("when", "what")
SELECT :anchor::timestamptz - make_interval(hours => i % (100 * 24)), 'change #' || i
FROM generate_series(1, 1200) AS i;

INSERT INTO app."usage %" ("id", "cpu%", "at")
SELECT i, (i * 37) % 100, :anchor::timestamptz - make_interval(mins => 5 * i)
FROM generate_series(1, 500) AS i;
