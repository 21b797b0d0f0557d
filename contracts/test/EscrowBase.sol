// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {PaymentEscrow} from "../src/PaymentEscrow.sol";
import {TestToken} from "../src/TestToken.sol";

/// Shared fixture: an escrow with distinct owner, operator and fee recipient, a 6-decimals test
/// token, and a funded payer.
abstract contract EscrowBase is Test {
    PaymentEscrow internal escrow;
    TestToken internal token;

    address internal owner = makeAddr("owner");
    address internal operator = makeAddr("operator");
    address internal feeRecipient = makeAddr("feeRecipient");
    address internal payer = makeAddr("payer");
    address internal merchant = makeAddr("merchant");
    address internal stranger = makeAddr("stranger");

    address internal constant ETH = address(0);
    uint256 internal constant PAYER_ETH = 1_000 ether;
    uint256 internal constant PAYER_TOKENS = 1_000_000e6;
    uint64 internal expiry;

    // Expected events are emitted as `PaymentEscrow.<Event>(…)`: the contract's own declarations.

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        expiry = uint64(block.timestamp + 1 days);
        escrow = new PaymentEscrow(owner, operator, feeRecipient);
        token = new TestToken("Test USD", "TUSD", 6);

        vm.deal(payer, PAYER_ETH);
        token.mint(payer, PAYER_TOKENS);
        vm.prank(payer);
        token.approve(address(escrow), type(uint256).max);
        vm.prank(operator);
        token.approve(address(escrow), type(uint256).max);
    }

    // ------------------------------------------------------------ helpers

    function _depositEth(uint256 amount, bytes32 salt) internal returns (bytes32 id) {
        vm.prank(payer);
        id = escrow.deposit{value: amount}(merchant, expiry, salt);
    }

    function _depositToken(uint256 amount, bytes32 salt) internal returns (bytes32 id) {
        vm.prank(payer);
        id = escrow.depositToken(merchant, address(token), amount, expiry, salt);
    }

    function _capture(bytes32 id, uint256 amount, uint256 fee) internal {
        vm.prank(operator);
        escrow.capture(id, amount, fee);
    }

    function _balance(address asset, address who) internal view returns (uint256) {
        return asset == ETH ? who.balance : token.balanceOf(who);
    }

    struct P {
        address payer;
        address merchant;
        address token;
        uint256 amount;
        uint64 expiry;
        uint256 captured;
        uint256 refunded;
        bool closed;
    }

    function _payment(bytes32 id) internal view returns (P memory p) {
        (p.payer, p.merchant, p.token, p.amount, p.expiry, p.captured, p.refunded, p.closed) = escrow.payments(id);
    }

    function _expectEmit() internal {
        vm.expectEmit(true, true, true, true, address(escrow));
    }
}
