-- The rest of the store: invoices and what each decision writes with them (events, references,
-- idempotency records, the webhook outbox, the ledger), the inbound webhooks seen, and the chain
-- watchers' state. Values are the domain records as JSON text; the columns beside them are what
-- the store looks records up by. Ids are compared byte by byte (COLLATE "C"): they are
-- time-ordered, so an index on them is in creation order and a page cursor is the last id seen.

CREATE TABLE store_meta (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE invoices (
    id TEXT COLLATE "C" PRIMARY KEY,
    merchant_id TEXT COLLATE "C" NOT NULL,
    order_id TEXT COLLATE "C",
    version BIGINT NOT NULL,
    -- The expiry (unix seconds) while the invoice awaits it; NULL once it is handled or moot.
    expiry_due BIGINT,
    body TEXT NOT NULL
);
CREATE INDEX invoices_by_merchant ON invoices (merchant_id, id);
CREATE INDEX invoices_by_order ON invoices (merchant_id, order_id, id) WHERE order_id IS NOT NULL;
CREATE INDEX invoices_by_expiry ON invoices (expiry_due, id) WHERE expiry_due IS NOT NULL;

-- A rail's reference (`card:pi_…`, `btcs:<script>`) → the one invoice that holds it. `fresh`: a
-- bitcoin script the watcher (on whichever relay holds its lease) has not yet been told of.
CREATE TABLE lookups (
    key TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT NOT NULL,
    invoice_id TEXT COLLATE "C" NOT NULL,
    fresh BOOLEAN NOT NULL
);
CREATE INDEX lookups_by_kind ON lookups (kind);
CREATE INDEX lookups_fresh ON lookups (kind) WHERE fresh;

CREATE TABLE events (
    id TEXT COLLATE "C" PRIMARY KEY,
    merchant_id TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_by_merchant ON events (merchant_id, id);

-- Keys seen once, with what was stored under them: API responses kept for retried requests
-- (`idempotency`, scoped by merchant and keyed by Idempotency-Key) and inbound webhooks
-- (`inbound`, keyed `source:event id`, scope empty): a replay changes nothing.
CREATE TABLE idempotency (
    scope TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
CREATE TABLE inbound (
    scope TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX inbound_by_age ON inbound (created_at);

-- The chain watchers' cursors and tracking records, opaque to the store.
CREATE TABLE chain_cursors (
    chain TEXT PRIMARY KEY,
    cursor BYTEA NOT NULL
);
CREATE TABLE chain_tracked (
    chain TEXT NOT NULL,
    key BYTEA NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (chain, key)
);

-- The webhook outbox. An event of a merchant with an endpoint is marked in `webhook_fanout` in
-- its own transaction; fan-out turns the mark into one `webhook_queue` row per endpoint that wants
-- it. A lane (endpoint · invoice) lists an invoice's events for an endpoint; `webhook_lanes` holds
-- each non-empty lane's head and when it is due, so events of one invoice arrive in order.
CREATE TABLE webhook_endpoints (
    merchant_id TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (merchant_id, id)
);
CREATE TABLE webhook_fanout (
    event_id TEXT COLLATE "C" PRIMARY KEY,
    merchant_id TEXT COLLATE "C" NOT NULL
);
CREATE TABLE webhook_queue (
    endpoint_id TEXT COLLATE "C" NOT NULL,
    invoice_id TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    merchant_id TEXT COLLATE "C" NOT NULL,
    attempts INTEGER NOT NULL,
    first_at BIGINT,
    PRIMARY KEY (endpoint_id, invoice_id, event_id)
);
CREATE TABLE webhook_lanes (
    endpoint_id TEXT COLLATE "C" NOT NULL,
    invoice_id TEXT COLLATE "C" NOT NULL,
    head_event TEXT COLLATE "C" NOT NULL,
    due_at_ms BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, invoice_id)
);
CREATE INDEX webhook_lanes_by_due ON webhook_lanes (due_at_ms, endpoint_id, invoice_id);
CREATE TABLE webhook_attempts (
    event_id TEXT COLLATE "C" NOT NULL,
    endpoint_id TEXT COLLATE "C" NOT NULL,
    attempt INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (event_id, endpoint_id, attempt)
);

-- The ledger: balances by merchant, asset and account (a Net of debits and credits, as JSON,
-- since amounts may exceed 64 bits), each invoice version's entry, and the payout work list.
CREATE TABLE ledger_balances (
    merchant_id TEXT COLLATE "C" NOT NULL,
    asset TEXT COLLATE "C" NOT NULL,
    account TEXT COLLATE "C" NOT NULL,
    net TEXT NOT NULL,
    PRIMARY KEY (merchant_id, asset, account)
);
CREATE TABLE ledger_entries (
    merchant_id TEXT COLLATE "C" NOT NULL,
    invoice_id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    lines TEXT NOT NULL,
    PRIMARY KEY (merchant_id, invoice_id, version)
);
CREATE TABLE payouts (
    kind TEXT COLLATE "C" NOT NULL,
    invoice_id TEXT COLLATE "C" NOT NULL,
    record TEXT COLLATE "C" NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (kind, invoice_id, record)
);
