// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title TestToken
/// @notice TEST/DEV ONLY. A plain ERC-20 whose `mint` is open to anyone, for local testnets
/// (anvil in the Rust integration tests and `relay dev`). Never deploy it anywhere real.
contract TestToken is ERC20 {
    uint8 private immutable _decimals;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) ERC20(name_, symbol_) {
        _decimals = decimals_;
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    /// Anyone may mint any amount to anyone: this token has no value by design.
    function mint(address to, uint256 amount) public {
        _mint(to, amount);
    }
}
