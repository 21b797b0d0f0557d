// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {PaymentEscrow} from "../src/PaymentEscrow.sol";
import {EscrowBase} from "./EscrowBase.sol";
import {ReentrantMerchant, ReentrantPayer} from "./mocks/Receivers.sol";

/// Contracts that re-enter the escrow from their receive() cannot take more than they are owed.
contract ReentrancyTest is EscrowBase {
    ReentrantPayer internal attacker;
    /// Other people's money in the escrow, which the attacker must not reach.
    uint256 internal constant BYSTANDER = 50 ether;

    function setUp() public override {
        super.setUp();
        attacker = new ReentrantPayer(escrow);
        vm.deal(address(attacker), 0);
        _depositEth(BYSTANDER, "bystander");
        vm.deal(operator, 10 ether);
        vm.prank(operator);
        escrow.fund{value: 10 ether}(ETH, 10 ether);
    }

    function _guardError() internal pure returns (bytes memory) {
        return abi.encodeWithSelector(ReentrancyGuard.ReentrancyGuardReentrantCall.selector);
    }

    function test_payerReenteringReclaim_getsRemainderOnce() public {
        bytes32 id = attacker.depositEth{value: 5 ether}(merchant, expiry, "a");
        _capture(id, 1 ether, 0);
        vm.warp(expiry);

        attacker.reclaim();

        assertEq(address(attacker).balance, 4 ether, "remainder once, not twice");
        assertGt(attacker.attempts(), 0, "receive() did try to re-enter");
        assertEq(attacker.successes(), 0, "no re-entry succeeded");
        assertEq(attacker.lastError(), _guardError());
        assertEq(address(escrow).balance, BYSTANDER + 10 ether, "bystander deposit and liquidity intact");
        assertTrue(_payment(id).closed);
    }

    function test_payerReenteringDuringVoid_cannotReclaimAgain() public {
        bytes32 id = attacker.depositEth{value: 5 ether}(merchant, expiry, "a");
        vm.warp(expiry); // reclaim would be allowed if it were reachable
        vm.prank(operator);
        escrow.void(id);

        assertEq(address(attacker).balance, 5 ether);
        assertGt(attacker.attempts(), 0);
        assertEq(attacker.successes(), 0);
        assertEq(attacker.lastError(), _guardError());
        assertEq(address(escrow).balance, BYSTANDER + 10 ether);
    }

    function test_payerReenteringDuringRefund_cannotReclaim() public {
        bytes32 id = attacker.depositEth{value: 5 ether}(merchant, expiry, "a");
        _capture(id, 2 ether, 0);
        _fundRefunds(merchant, merchant, ETH, 3 ether);
        vm.warp(expiry);
        _refund(id, 2 ether);

        assertEq(address(attacker).balance, 2 ether, "only the refund");
        assertEq(attacker.successes(), 0);
        assertEq(attacker.lastError(), _guardError());
        assertEq(escrow.refundReserve(merchant, ETH), 1 ether);
        assertEq(
            address(escrow).balance, BYSTANDER + 10 ether + 3 ether + 1 ether, "uncaptured 3 ether and reserve held"
        );
        assertFalse(_payment(id).closed);

        // Its legitimate reclaim still works afterwards, once.
        attacker.reclaim();
        assertEq(address(attacker).balance, 5 ether);
        assertEq(address(escrow).balance, BYSTANDER + 10 ether + 1 ether);
    }

    function test_merchantReenteringWithdrawRefunds_getsAmountOnce() public {
        ReentrantMerchant evil = new ReentrantMerchant(escrow);
        vm.deal(address(this), 2 ether);
        evil.fundRefunds{value: 2 ether}();
        _fundRefunds(merchant, merchant, ETH, 4 ether); // another merchant's reserve

        evil.withdrawRefunds(1 ether);

        assertEq(address(evil).balance, 1 ether, "withdrawn once");
        assertGt(evil.attempts(), 0);
        assertEq(evil.successes(), 0, "no re-entry succeeded");
        assertEq(evil.lastError(), _guardError());
        assertEq(escrow.refundReserve(address(evil), ETH), 1 ether);
        assertEq(escrow.refundReserve(merchant, ETH), 4 ether);
        assertEq(address(escrow).balance, BYSTANDER + 10 ether + 1 ether + 4 ether);
    }

    function test_payerBubblingReentryFailure_revertsItsOwnReclaim() public {
        bytes32 id = attacker.depositEth{value: 5 ether}(merchant, expiry, "a");
        vm.warp(expiry);
        attacker.setBubble(true);
        vm.expectRevert(PaymentEscrow.TransferFailed.selector);
        attacker.reclaim();
        assertFalse(_payment(id).closed, "state rolled back");
        assertEq(address(escrow).balance, BYSTANDER + 10 ether + 5 ether);
        assertEq(address(attacker).balance, 0);
    }

    function test_merchantReenteringOnCapture_cannotDrain() public {
        ReentrantMerchant evil = new ReentrantMerchant(escrow);
        // The merchant contract is also the payer of a short-lived payment of its own ...
        vm.deal(address(this), 3 ether);
        bytes32 own = evil.depositEth{value: 3 ether}(merchant, uint64(block.timestamp + 1 hours), "own");
        // ... and the merchant of a long-lived payment made by `payer`.
        vm.prank(payer);
        bytes32 paid = escrow.deposit{value: 8 ether}(address(evil), expiry, "paid");
        evil.setCapturedPayment(paid);
        vm.warp(block.timestamp + 2 hours); // `own` has expired, `paid` has not

        _capture(paid, 4 ether, 0.4 ether);

        assertEq(address(evil).balance, 3.6 ether, "only its share of the capture");
        assertGt(evil.attempts(), 0);
        assertEq(evil.successes(), 0, "neither reclaim nor capture re-entered");
        assertEq(evil.lastError(), _guardError());
        assertFalse(_payment(own).closed);
        assertEq(_payment(paid).captured, 4 ether);
        assertEq(address(escrow).balance, BYSTANDER + 10 ether + 3 ether + 4 ether);

        // Its own reclaim, done properly, pays exactly once.
        evil.reclaim();
        assertEq(address(evil).balance, 6.6 ether);
        vm.expectRevert(PaymentEscrow.PaymentClosed.selector);
        evil.reclaim();
        assertEq(address(escrow).balance, BYSTANDER + 10 ether + 4 ether);
    }
}
