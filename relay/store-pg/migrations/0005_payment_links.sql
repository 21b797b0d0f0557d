-- Payment links: a URL a merchant shares that makes an invoice for each payer who opens it. The
-- body is the link's JSON; `token` (the public part of its URL) finds it on a visit, `version`
-- guards a single-use link's one invoice against two first visitors at once.
CREATE TABLE payment_links (
    id TEXT COLLATE "C" PRIMARY KEY,
    merchant_id TEXT COLLATE "C" NOT NULL,
    token TEXT COLLATE "C" NOT NULL UNIQUE,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX payment_links_by_merchant ON payment_links (merchant_id, id);
