// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {PaymentEscrow} from "../src/PaymentEscrow.sol";
import {TestToken} from "../src/TestToken.sol";

/// Shared fixture: an escrow with distinct owner, operator, fee recipient and treasury, a 10 % fee
/// cap and a 2-day change delay, a 6-decimals test token, and a funded payer.
abstract contract EscrowBase is Test {
    PaymentEscrow internal escrow;
    TestToken internal token;

    address internal owner = makeAddr("owner");
    address internal operator = makeAddr("operator");
    address internal feeRecipient = makeAddr("feeRecipient");
    address internal treasury = makeAddr("treasury");
    address internal payer = makeAddr("payer");
    address internal merchant = makeAddr("merchant");
    address internal stranger = makeAddr("stranger");

    address internal constant ETH = address(0);
    uint256 internal constant PAYER_ETH = 1_000 ether;
    uint256 internal constant PAYER_TOKENS = 1_000_000e6;
    uint16 internal constant MAX_FEE_BPS = 1_000; // 10 %
    uint64 internal constant CHANGE_DELAY = 2 days;
    uint64 internal expiry;

    // Expected events are emitted as `PaymentEscrow.<Event>(…)`: the contract's own declarations.

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        expiry = uint64(block.timestamp + 1 days);
        escrow = _newEscrow(MAX_FEE_BPS);
        token = new TestToken("Test USD", "TUSD", 6);

        vm.deal(payer, PAYER_ETH);
        token.mint(payer, PAYER_TOKENS);
        vm.prank(payer);
        token.approve(address(escrow), type(uint256).max);
        vm.prank(operator);
        token.approve(address(escrow), type(uint256).max);
    }

    // ------------------------------------------------------------ helpers

    /// An escrow with the fixture's roles and delay and the given fee cap.
    function _newEscrow(uint16 maxFeeBps) internal returns (PaymentEscrow) {
        return new PaymentEscrow(owner, operator, feeRecipient, treasury, maxFeeBps, CHANGE_DELAY);
    }

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

    /// `from` adds `amount` of `asset` to `forMerchant`'s refund reserve, with freshly dealt or
    /// minted funds (so `from`'s balance ends where it started).
    function _fundRefunds(address from, address forMerchant, address asset, uint256 amount) internal {
        if (asset == ETH) {
            vm.deal(from, from.balance + amount);
            vm.prank(from);
            escrow.fundRefunds{value: amount}(forMerchant, ETH, amount);
        } else {
            token.mint(from, amount);
            vm.startPrank(from);
            token.approve(address(escrow), type(uint256).max);
            escrow.fundRefunds(forMerchant, asset, amount);
            vm.stopPrank();
        }
    }

    function _refund(bytes32 id, uint256 amount) internal {
        vm.prank(operator);
        escrow.refund(id, amount);
    }

    /// Owner proposes, time passes, anyone executes.
    function _changeRole(PaymentEscrow.Role role, address next) internal {
        vm.prank(owner);
        escrow.proposeChange(role, next);
        vm.warp(block.timestamp + CHANGE_DELAY);
        vm.prank(stranger);
        escrow.executeChange(role);
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
