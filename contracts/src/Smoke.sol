// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// Minimal contract used by the toolchain smoke test.
contract Smoke {
    uint256 public value;

    event ValueSet(uint256 value);

    function set(uint256 v) external {
        value = v;
        emit ValueSet(v);
    }
}
