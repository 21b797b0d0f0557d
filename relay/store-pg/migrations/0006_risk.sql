-- Risk controls. `risk_rules`: a merchant's rules as JSON, with the version that guards an edit
-- against a concurrent one. `risk_signals`: what velocity counts, one row per thing a payer did
-- under one payer key (a card fingerprint, a sender address, a card's declines); the primary key
-- makes a signal recorded again count once. Amounts are minor units as text (up to 2^128).
CREATE TABLE risk_rules (
    merchant_id TEXT COLLATE "C" PRIMARY KEY,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE risk_signals (
    merchant_id TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    currency TEXT NOT NULL,
    amount TEXT NOT NULL,
    PRIMARY KEY (merchant_id, key, id)
);
CREATE INDEX risk_signals_by_time ON risk_signals (merchant_id, key, at);
