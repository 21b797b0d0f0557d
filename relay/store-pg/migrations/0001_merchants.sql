-- Merchants and their API keys. Values are the domain records as JSON text, as the sled backend
-- stores them; the columns beside them are what the store looks records up by.

CREATE TABLE merchants (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

-- Every key of a merchant, revoked ones included. `hash` is set while the key is in use and
-- cleared in the write that revokes or rolls it away, so an old secret is refused at once.
CREATE TABLE api_keys (
    merchant_id TEXT NOT NULL REFERENCES merchants (id),
    key_id TEXT NOT NULL,
    hash BYTEA,
    body TEXT NOT NULL,
    PRIMARY KEY (merchant_id, key_id)
);

-- A secret's hash finds one key (several NULLs, the retired keys, do not conflict).
CREATE UNIQUE INDEX api_keys_by_hash ON api_keys (hash);
