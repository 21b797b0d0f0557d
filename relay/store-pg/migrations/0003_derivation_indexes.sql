-- Derivation indexes allocated in the database, so no two relays ever hand out the same address:
-- the next unused index of each descriptor, by its owner (a merchant, or the operator's
-- treasury).

CREATE TABLE derivation_indexes (
    owner TEXT PRIMARY KEY,
    next_index BIGINT NOT NULL
);
