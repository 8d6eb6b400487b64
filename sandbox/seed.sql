-- Deterministic synthetic data: every value is arithmetic on the row number and
-- the anchor time, so the same scale and anchor always give the same rows.
-- Parameters: :scale (rows multiplier) and :anchor (the "now" of the data), substituted by sandbox.platform.
TRUNCATE user_sessions, user_alerts, market_data, system_logs, users RESTART IDENTITY;

INSERT INTO users (id, email, name, plan, created_at, updated_at)
SELECT i,
       'user' || i || '@example.test',
       'User ' || i,
       (ARRAY['free', 'pro', 'team'])[1 + i % 3],
       :anchor::timestamptz - make_interval(days => (1 + (i::bigint * 37) % 700)::int),
       :anchor::timestamptz - make_interval(days => ((i::bigint * 11) % 30)::int)
FROM generate_series(1, 2000 * :scale) AS i;

-- A third of the alerts resolved, spread over 400 days: many resolved more than 30 days ago.
INSERT INTO user_alerts (id, user_id, symbol, condition, threshold, created_at, resolved, resolved_at, archived)
SELECT i,
       1 + (i::bigint * 7919) % (2000 * :scale),
       (ARRAY['BTC', 'ETH', 'SOL', 'XRP', 'ADA', 'DOGE', 'DOT', 'AVAX'])[1 + i % 8],
       (ARRAY['above', 'below', 'change_pct'])[1 + i % 3],
       round((100 + (i::bigint * 131) % 90000)::numeric / 7, 8),
       :anchor::timestamptz - make_interval(mins => ((i::bigint * 97) % (400 * 1440))::int),
       i % 3 = 0,
       CASE WHEN i % 3 = 0
            THEN :anchor::timestamptz - make_interval(mins => ((i::bigint * 97) % (400 * 1440))::int)
                 + make_interval(mins => ((i::bigint * 13) % ((i::bigint * 97) % (400 * 1440) + 1))::int)
       END,
       false
FROM generate_series(1, 10000 * :scale) AS i;

-- 20 symbols, one price every 5 minutes each, going back from the anchor.
INSERT INTO market_data (id, symbol, "timestamp", price, volume, market_cap)
SELECT i,
       'SYM' || lpad((i % 20)::text, 2, '0'),
       :anchor::timestamptz - make_interval(mins => (5 * (i / 20))::int),
       round((1000 + (i::bigint * 7) % 50000 + (i % 97) * 0.125)::numeric, 8),
       round(((i::bigint * 7919) % 1000000)::numeric / 3, 4),
       round(((i::bigint * 104729) % 100000000)::numeric * 1000, 2)
FROM generate_series(0, 50000 * :scale - 1) AS i;

-- Logs spread over 180 days: half of them older than the 90-day retention of §4.5.
INSERT INTO system_logs (id, level, message, context, created_at)
SELECT i,
       (ARRAY['INFO', 'INFO', 'INFO', 'WARN', 'ERROR'])[1 + i % 5],
       (ARRAY['request served', 'cache miss', 'price refresh', 'login', 'payment webhook'])[1 + (i / 5) % 5]
           || ' #' || i,
       jsonb_build_object(
           'userId', 1 + (i::bigint * 31) % (2000 * :scale),
           'ip', '10.' || (i % 256) || '.' || ((i / 256) % 256) || '.' || (i::bigint * 7 % 256),
           'userAgent', 'Mozilla/5.0 (runbook sandbox ' || (i % 13) || ')',
           'action', (ARRAY['view', 'alert.create', 'alert.resolve', 'login', 'checkout'])[1 + i % 5],
           'response_time', (i::bigint * 37) % 6000),
       :anchor::timestamptz - make_interval(secs => ((i::bigint * 1553) % (180 * 86400))::int)
FROM generate_series(1, 100000 * :scale) AS i;

-- Sessions expiring from 30 days ago to 30 days ahead: about half already expired.
INSERT INTO user_sessions (id, user_id, token_hash, ip, user_agent, created_at, expires_at)
SELECT i,
       1 + (i::bigint * 613) % (2000 * :scale),
       md5('session-' || i),
       ('192.0.2.' || (i % 250 + 1))::inet,
       'Mozilla/5.0 (runbook sandbox ' || (i % 13) || ')',
       :anchor::timestamptz - make_interval(mins => (30 * 1440 + (i::bigint * 61) % (30 * 1440))::int),
       :anchor::timestamptz - make_interval(mins => (30 * 1440)::int) + make_interval(mins => ((i::bigint * 89) % (60 * 1440))::int)
FROM generate_series(1, 5000 * :scale) AS i;

SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users));
SELECT setval(pg_get_serial_sequence('user_alerts', 'id'), (SELECT max(id) FROM user_alerts));
SELECT setval(pg_get_serial_sequence('market_data', 'id'), (SELECT max(id) FROM market_data));
SELECT setval(pg_get_serial_sequence('system_logs', 'id'), (SELECT max(id) FROM system_logs));
SELECT setval(pg_get_serial_sequence('user_sessions', 'id'), (SELECT max(id) FROM user_sessions));
