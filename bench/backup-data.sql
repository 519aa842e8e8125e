-- bench/backup's realistic data set: rows :first to :last of an orders table whose columns
-- compress about as a production database's do (gzip 6 about 2.6:1 on this table): a
-- time-ordered timestamp with jitter, Zipf-distributed customer ids and words, prices, a
-- status from a few values, a free-text note of 8-38 words drawn from a 10,000-word
-- vocabulary with a Zipf-like distribution (each word is a function of its rank, so no
-- lookup), and 8 random bytes (a token or hash).
CREATE TABLE IF NOT EXISTS bench_orders (
  id bigint PRIMARY KEY,
  created_at timestamptz NOT NULL,
  customer_id integer NOT NULL,
  status text NOT NULL,
  amount numeric(12, 2) NOT NULL,
  weight double precision NOT NULL,
  note text NOT NULL,
  token bytea NOT NULL
);
INSERT INTO bench_orders
SELECT g,
       timestamptz '2024-01-01' + g * interval '3 seconds' + random() * interval '10 minutes',
       floor(1000000 ^ random())::int,
       (ARRAY['new', 'paid', 'packed', 'shipped', 'delivered', 'returned'])[1 + floor(random() ^ 2 * 6)::int],
       round((random() * 5000)::numeric, 2),
       round((random() * 100)::numeric, 1)::float8,
       array_to_string(ARRAY(
         SELECT translate(substr(md5(rank::text), 1, 2 + rank % 9), '0123456789', 'qrstuvwxyz')
         FROM (SELECT floor(10000 ^ (random() ^ 2))::int AS rank
               FROM generate_series(1, 8 + (g * 7) % 31)) AS picks), ' '),
       decode(substr(md5(g::text || random()::text), 1, 16), 'hex')
FROM generate_series(:first, :last) AS g;
