-- Leases of the singleton roles (a chain watcher, the expiry sweep, …), one row per role. The
-- token grows by one each time the lease changes hands; a role's writes check it in their own
-- transaction, so a former holder that was paused past its lease can never write again.
-- Times are the database's own (now()), so the relays' clocks do not matter.

CREATE TABLE leases (
    role TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
