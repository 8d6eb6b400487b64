-- Deterministic synthetic data: every value is arithmetic on the row number and
-- the anchor time, so the same scale and anchor always give the same rows.
-- Parameters: :scale (rows multiplier) and :anchor (the "now" of the data), substituted by sandbox.platform.
TRUNCATE auth_events, api_requests, security_events, user_sessions, user_alerts, market_data, system_logs, users RESTART IDENTITY;

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

-- Normal traffic for security operations (§5): logins over the last 7 days, one in ten
-- failing, from many addresses (documentation and benchmark ranges); a day of API
-- requests over 300 keys; a few security events, none CRITICAL. No attack: tests add theirs.
INSERT INTO auth_events (id, user_id, email, ip, success, user_agent, created_at)
SELECT i,
       1 + (i::bigint * 37) % (2000 * :scale),
       'user' || (1 + (i::bigint * 37) % (2000 * :scale)) || '@example.test',
       ('198.18.' || (i % 7) || '.' || ((i::bigint * 13) % 250 + 1))::inet,
       i % 10 <> 0,
       'Mozilla/5.0 (runbook sandbox ' || (i % 13) || ')',
       :anchor::timestamptz - make_interval(secs => ((i::bigint * 7919) % (7 * 86400))::int)
FROM generate_series(1, 20000 * :scale) AS i;

INSERT INTO api_requests (id, api_key, ip, path, status, created_at)
SELECT i,
       'key-' || ((i::bigint * 17) % 300),
       ('198.19.' || (i % 5) || '.' || ((i::bigint * 11) % 250 + 1))::inet,
       (ARRAY['/api/market/prices', '/api/dashboard', '/api/learning/lessons', '/api/health'])[1 + i % 4],
       (ARRAY[200, 200, 200, 200, 200, 200, 200, 304, 401, 429])[1 + (i::bigint * 7) % 10],
       :anchor::timestamptz - make_interval(secs => ((i::bigint * 4817) % 86400)::int)
FROM generate_series(1, 30000 * :scale) AS i;

INSERT INTO security_events (id, severity, type, details, created_at)
SELECT i,
       (ARRAY['LOW', 'LOW', 'MEDIUM', 'HIGH'])[1 + i % 4],
       (ARRAY['rate_limited', 'csrf_rejected', 'webhook_signature_invalid', 'admin_login'])[1 + (i / 4) % 4],
       jsonb_build_object('ip', '198.18.0.' || (i % 250 + 1), 'path', '/api/dashboard'),
       :anchor::timestamptz - make_interval(secs => ((i::bigint * 6007) % (7 * 86400))::int)
FROM generate_series(1, 200 * :scale) AS i;

SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users));
SELECT setval(pg_get_serial_sequence('user_alerts', 'id'), (SELECT max(id) FROM user_alerts));
SELECT setval(pg_get_serial_sequence('market_data', 'id'), (SELECT max(id) FROM market_data));
SELECT setval(pg_get_serial_sequence('system_logs', 'id'), (SELECT max(id) FROM system_logs));
SELECT setval(pg_get_serial_sequence('user_sessions', 'id'), (SELECT max(id) FROM user_sessions));
SELECT setval(pg_get_serial_sequence('auth_events', 'id'), (SELECT max(id) FROM auth_events));
SELECT setval(pg_get_serial_sequence('api_requests', 'id'), (SELECT max(id) FROM api_requests));
SELECT setval(pg_get_serial_sequence('security_events', 'id'), (SELECT max(id) FROM security_events));
