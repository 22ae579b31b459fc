-- statusproxy schema 3: raw rows without the start_ms index.
-- Rows are appended as exchanges finish, so their id order is their time
-- order (to within the longest exchange): retention prunes by bisecting ids,
-- and the latest rows are `ORDER BY id DESC`. Dropping the index spares every
-- insert a second B-tree update, a quarter of the writer's work, which keeps
-- --log-exchanges all close to --log-exchanges none. Reports read minute_stats.
DROP INDEX IF EXISTS exchanges_start;
