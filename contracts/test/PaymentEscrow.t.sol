// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {PaymentEscrow} from "../src/PaymentEscrow.sol";
import {EscrowBase} from "./EscrowBase.sol";
import {EthRejecter} from "./mocks/Receivers.sol";
import {FeeOnTransferToken} from "./mocks/FeeOnTransferToken.sol";

/// Unit tests: every path and every custom error of PaymentEscrow.
contract PaymentEscrowTest is EscrowBase {
    bytes32 internal constant SALT = keccak256("invoice-1");

    // ================================================================ constructor / admin

    function test_constructor_setsRolesAndEmits() public {
        address predicted = vm.computeCreateAddress(address(this), vm.getNonce(address(this)));
        vm.expectEmit(true, true, true, true, predicted);
        emit PaymentEscrow.ChangeExecuted(PaymentEscrow.Role.Operator, address(0), operator);
        vm.expectEmit(true, true, true, true, predicted);
        emit PaymentEscrow.ChangeExecuted(PaymentEscrow.Role.FeeRecipient, address(0), feeRecipient);
        vm.expectEmit(true, true, true, true, predicted);
        emit PaymentEscrow.ChangeExecuted(PaymentEscrow.Role.Treasury, address(0), treasury);
        PaymentEscrow e = new PaymentEscrow(owner, operator, feeRecipient, treasury, 250, 3 days);
        assertEq(address(e), predicted);
        assertEq(e.owner(), owner);
        assertEq(e.operator(), operator);
        assertEq(e.feeRecipient(), feeRecipient);
        assertEq(e.treasury(), treasury);
        assertEq(e.maxFeeBps(), 250);
        assertEq(e.changeDelay(), 3 days);
        for (uint8 r; r < 3; r++) {
            (address proposed, uint64 eta) = e.pendingChange(PaymentEscrow.Role(r));
            assertEq(proposed, address(0));
            assertEq(eta, 0);
        }
    }

    function test_constructor_revertsOnZeroAddresses() public {
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        new PaymentEscrow(owner, address(0), feeRecipient, treasury, MAX_FEE_BPS, CHANGE_DELAY);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        new PaymentEscrow(owner, operator, address(0), treasury, MAX_FEE_BPS, CHANGE_DELAY);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        new PaymentEscrow(owner, operator, feeRecipient, address(0), MAX_FEE_BPS, CHANGE_DELAY);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new PaymentEscrow(address(0), operator, feeRecipient, treasury, MAX_FEE_BPS, CHANGE_DELAY);
    }

    function test_constructor_feeCapAtMost100Percent() public {
        vm.expectRevert(PaymentEscrow.FeeCapTooHigh.selector);
        new PaymentEscrow(owner, operator, feeRecipient, treasury, 10_001, CHANGE_DELAY);
        vm.expectRevert(PaymentEscrow.FeeCapTooHigh.selector);
        new PaymentEscrow(owner, operator, feeRecipient, treasury, type(uint16).max, CHANGE_DELAY);
        assertEq(_newEscrow(10_000).maxFeeBps(), 10_000);
        assertEq(_newEscrow(0).maxFeeBps(), 0);
    }

    // ---------------------------------------------------------------- timelocked role changes

    function test_proposeChange_recordsAndEmits() public {
        address next = makeAddr("nextOperator");
        uint64 eta = uint64(block.timestamp) + CHANGE_DELAY;
        _expectEmit();
        emit PaymentEscrow.ChangeProposed(PaymentEscrow.Role.Operator, operator, next, eta);
        vm.prank(owner);
        escrow.proposeChange(PaymentEscrow.Role.Operator, next);

        (address proposed, uint64 pendingEta) = escrow.pendingChange(PaymentEscrow.Role.Operator);
        assertEq(proposed, next);
        assertEq(pendingEta, eta);
        assertEq(escrow.operator(), operator, "nothing changes at proposal time");
        (proposed, pendingEta) = escrow.pendingChange(PaymentEscrow.Role.Treasury);
        assertEq(proposed, address(0), "other roles unaffected");
        assertEq(pendingEta, 0);
    }

    function test_executeChange_revertsBeforeEtaPassesAtEta() public {
        address next = makeAddr("nextTreasury");
        vm.prank(owner);
        escrow.proposeChange(PaymentEscrow.Role.Treasury, next);
        uint64 eta = uint64(block.timestamp) + CHANGE_DELAY;

        vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.ChangeNotReady.selector, eta));
        escrow.executeChange(PaymentEscrow.Role.Treasury);
        vm.warp(eta - 1);
        vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.ChangeNotReady.selector, eta));
        escrow.executeChange(PaymentEscrow.Role.Treasury);
        assertEq(escrow.treasury(), treasury);

        vm.warp(eta);
        _expectEmit();
        emit PaymentEscrow.ChangeExecuted(PaymentEscrow.Role.Treasury, treasury, next);
        vm.prank(stranger); // anyone may execute
        escrow.executeChange(PaymentEscrow.Role.Treasury);
        assertEq(escrow.treasury(), next);
        (address proposed, uint64 pendingEta) = escrow.pendingChange(PaymentEscrow.Role.Treasury);
        assertEq(proposed, address(0), "pending entry cleared");
        assertEq(pendingEta, 0);

        vm.expectRevert(PaymentEscrow.NoPendingChange.selector);
        escrow.executeChange(PaymentEscrow.Role.Treasury);
    }

    function test_executeChange_revertsWithoutProposal() public {
        for (uint8 r; r < 3; r++) {
            vm.expectRevert(PaymentEscrow.NoPendingChange.selector);
            escrow.executeChange(PaymentEscrow.Role(r));
        }
    }

    function test_proposeChange_replacesPendingAndRestartsDelay() public {
        address first = makeAddr("first");
        address second = makeAddr("second");
        vm.prank(owner);
        escrow.proposeChange(PaymentEscrow.Role.FeeRecipient, first);
        vm.warp(block.timestamp + 1 days);
        uint64 eta = uint64(block.timestamp) + CHANGE_DELAY;
        _expectEmit();
        emit PaymentEscrow.ChangeProposed(PaymentEscrow.Role.FeeRecipient, feeRecipient, second, eta);
        vm.prank(owner);
        escrow.proposeChange(PaymentEscrow.Role.FeeRecipient, second);

        // The first proposal's eta has passed, but it is gone.
        vm.warp(block.timestamp + 1 days);
        vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.ChangeNotReady.selector, eta));
        escrow.executeChange(PaymentEscrow.Role.FeeRecipient);
        vm.warp(eta);
        escrow.executeChange(PaymentEscrow.Role.FeeRecipient);
        assertEq(escrow.feeRecipient(), second);
    }

    function test_cancelChange_dropsProposal() public {
        address next = makeAddr("nextOperator");
        vm.prank(owner);
        escrow.proposeChange(PaymentEscrow.Role.Operator, next);
        _expectEmit();
        emit PaymentEscrow.ChangeCanceled(PaymentEscrow.Role.Operator, next);
        vm.prank(owner);
        escrow.cancelChange(PaymentEscrow.Role.Operator);

        (address proposed, uint64 eta) = escrow.pendingChange(PaymentEscrow.Role.Operator);
        assertEq(proposed, address(0));
        assertEq(eta, 0);
        vm.warp(block.timestamp + CHANGE_DELAY);
        vm.expectRevert(PaymentEscrow.NoPendingChange.selector);
        escrow.executeChange(PaymentEscrow.Role.Operator);
        assertEq(escrow.operator(), operator);

        vm.prank(owner);
        vm.expectRevert(PaymentEscrow.NoPendingChange.selector);
        escrow.cancelChange(PaymentEscrow.Role.Operator);
    }

    function test_roleChanges_onlyOwnerProposesAndCancels() public {
        address[3] memory notOwners = [operator, stranger, feeRecipient];
        for (uint256 i; i < notOwners.length; i++) {
            vm.startPrank(notOwners[i]);
            vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, notOwners[i]));
            escrow.proposeChange(PaymentEscrow.Role.Operator, notOwners[i]);
            vm.stopPrank();
        }
        vm.prank(owner);
        escrow.proposeChange(PaymentEscrow.Role.Treasury, stranger);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, operator));
        escrow.cancelChange(PaymentEscrow.Role.Treasury);
        (address proposed,) = escrow.pendingChange(PaymentEscrow.Role.Treasury);
        assertEq(proposed, stranger, "still pending");
    }

    function test_proposeChange_revertsOnZeroAddress() public {
        vm.startPrank(owner);
        for (uint8 r; r < 3; r++) {
            vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
            escrow.proposeChange(PaymentEscrow.Role(r), address(0));
        }
        vm.stopPrank();
    }

    function test_roleChange_rejectsOutOfRangeRole() public {
        vm.prank(owner);
        (bool ok,) = address(escrow).call(abi.encodeWithSignature("proposeChange(uint8,address)", uint8(3), stranger));
        assertFalse(ok);
        (ok,) = address(escrow).call(abi.encodeWithSignature("executeChange(uint8)", uint8(3)));
        assertFalse(ok);
    }

    function test_operatorChange_movesOperatorRightsAfterDelay() public {
        address next = makeAddr("nextOperator");
        bytes32 a = _depositEth(1 ether, SALT);
        bytes32 b = _depositEth(1 ether, keccak256("b"));
        vm.prank(owner);
        escrow.proposeChange(PaymentEscrow.Role.Operator, next);

        // During the delay the old operator still acts and the proposed one cannot.
        vm.prank(next);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.void(a);
        vm.prank(operator);
        escrow.void(a);

        vm.warp(block.timestamp + CHANGE_DELAY);
        _expectEmit();
        emit PaymentEscrow.ChangeExecuted(PaymentEscrow.Role.Operator, operator, next);
        escrow.executeChange(PaymentEscrow.Role.Operator);
        assertEq(escrow.operator(), next);

        vm.deal(operator, 1 ether);
        vm.startPrank(operator);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.void(b);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.fund{value: 1 ether}(ETH, 1 ether);
        vm.stopPrank();
        vm.prank(next);
        escrow.void(b);
        assertEq(payer.balance, PAYER_ETH);
    }

    function test_feeRecipientChange_redirectsFees() public {
        address next = makeAddr("nextFeeRecipient");
        _changeRole(PaymentEscrow.Role.FeeRecipient, next);
        assertEq(escrow.feeRecipient(), next);

        vm.prank(payer);
        bytes32 id = escrow.deposit{value: 1 ether}(merchant, uint64(block.timestamp + 1 days), SALT);
        _capture(id, 1 ether, 0.1 ether);
        assertEq(next.balance, 0.1 ether);
        assertEq(feeRecipient.balance, 0);
    }

    function test_ownership_twoStepTransfer() public {
        address next = makeAddr("nextOwner");
        vm.prank(owner);
        escrow.transferOwnership(next);
        assertEq(escrow.owner(), owner, "owner unchanged until accepted");
        vm.prank(next);
        escrow.acceptOwnership();
        assertEq(escrow.owner(), next);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, owner));
        escrow.proposeChange(PaymentEscrow.Role.Operator, stranger);
        vm.prank(next);
        escrow.proposeChange(PaymentEscrow.Role.Operator, stranger);
        vm.warp(block.timestamp + CHANGE_DELAY);
        escrow.executeChange(PaymentEscrow.Role.Operator);
        assertEq(escrow.operator(), stranger);
    }

    function test_plainEthTransferIsRejected() public {
        vm.prank(payer);
        (bool ok,) = address(escrow).call{value: 1 ether}("");
        assertFalse(ok);
        assertEq(address(escrow).balance, 0);
    }

    // ================================================================ paymentId

    function test_paymentId_isHashOfTermsChainAndEscrow() public view {
        bytes32 expected =
            keccak256(abi.encode(block.chainid, address(escrow), merchant, address(token), uint256(5e6), expiry, SALT));
        assertEq(escrow.paymentId(merchant, address(token), 5e6, expiry, SALT), expected);
    }

    function test_paymentId_dependsOnChainAndEscrow() public {
        bytes32 here = escrow.paymentId(merchant, ETH, 1 ether, expiry, SALT);
        PaymentEscrow other = _newEscrow(MAX_FEE_BPS);
        assertNotEq(other.paymentId(merchant, ETH, 1 ether, expiry, SALT), here);
        vm.chainId(block.chainid + 1);
        assertNotEq(escrow.paymentId(merchant, ETH, 1 ether, expiry, SALT), here);
    }

    // ================================================================ deposit (ETH)

    function test_deposit_storesPaymentAndHoldsEth() public {
        bytes32 want = escrow.paymentId(merchant, ETH, 2 ether, expiry, SALT);
        _expectEmit();
        emit PaymentEscrow.PaymentDeposited(want, payer, merchant, ETH, 2 ether, expiry, SALT);
        bytes32 id = _depositEth(2 ether, SALT);

        assertEq(id, want);
        P memory p = _payment(id);
        assertEq(p.payer, payer);
        assertEq(p.merchant, merchant);
        assertEq(p.token, ETH);
        assertEq(p.amount, 2 ether);
        assertEq(p.expiry, expiry);
        assertEq(p.captured, 0);
        assertEq(p.refunded, 0);
        assertFalse(p.closed);
        assertEq(address(escrow).balance, 2 ether);
        assertEq(payer.balance, PAYER_ETH - 2 ether);
    }

    function test_deposit_revertsOnZeroValue() public {
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.deposit{value: 0}(merchant, expiry, SALT);
    }

    function test_deposit_revertsOnZeroMerchant() public {
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        escrow.deposit{value: 1 ether}(address(0), expiry, SALT);
    }

    function test_deposit_revertsAtOrAfterOwnExpiry() public {
        vm.startPrank(payer);
        vm.expectRevert(PaymentEscrow.Expired.selector);
        escrow.deposit{value: 1 ether}(merchant, uint64(block.timestamp), SALT);
        vm.expectRevert(PaymentEscrow.Expired.selector);
        escrow.deposit{value: 1 ether}(merchant, uint64(block.timestamp - 1), SALT);
        vm.stopPrank();
        assertEq(address(escrow).balance, 0);
    }

    function test_deposit_revertsOnDuplicateId() public {
        _depositEth(1 ether, SALT);
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.PaymentExists.selector);
        escrow.deposit{value: 1 ether}(merchant, expiry, SALT);
        // Another payer under the same terms is refused too; the first deposit stays.
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        vm.expectRevert(PaymentEscrow.PaymentExists.selector);
        escrow.deposit{value: 1 ether}(merchant, expiry, SALT);
        assertEq(address(escrow).balance, 1 ether);
    }

    function test_deposit_idNotReusableAfterClose() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(operator);
        escrow.void(id);
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.PaymentExists.selector);
        escrow.deposit{value: 1 ether}(merchant, expiry, SALT);
    }

    // ================================================================ depositToken

    function test_depositToken_storesPaymentAndPullsTokens() public {
        bytes32 want = escrow.paymentId(merchant, address(token), 25e6, expiry, SALT);
        _expectEmit();
        emit PaymentEscrow.PaymentDeposited(want, payer, merchant, address(token), 25e6, expiry, SALT);
        bytes32 id = _depositToken(25e6, SALT);

        assertEq(id, want);
        P memory p = _payment(id);
        assertEq(p.payer, payer);
        assertEq(p.token, address(token));
        assertEq(p.amount, 25e6);
        assertFalse(p.closed);
        assertEq(token.balanceOf(address(escrow)), 25e6);
        assertEq(token.balanceOf(payer), PAYER_TOKENS - 25e6);
    }

    function test_depositToken_ethAndTokenIdsDiffer() public {
        bytes32 a = _depositEth(1, SALT);
        bytes32 b = _depositToken(1, SALT);
        assertNotEq(a, b);
    }

    function test_depositToken_revertsOnZeroToken() public {
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        escrow.depositToken(merchant, address(0), 1e6, expiry, SALT);
    }

    function test_depositToken_revertsOnZeroMerchantAmountOrPastExpiry() public {
        vm.startPrank(payer);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        escrow.depositToken(address(0), address(token), 1e6, expiry, SALT);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.depositToken(merchant, address(token), 0, expiry, SALT);
        vm.expectRevert(PaymentEscrow.Expired.selector);
        escrow.depositToken(merchant, address(token), 1e6, uint64(block.timestamp), SALT);
        vm.stopPrank();
    }

    function test_depositToken_revertsOnDuplicateId() public {
        _depositToken(1e6, SALT);
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.PaymentExists.selector);
        escrow.depositToken(merchant, address(token), 1e6, expiry, SALT);
        assertEq(token.balanceOf(address(escrow)), 1e6);
    }

    function test_depositToken_rejectsEth() public {
        // depositToken is not payable: ETH sent with it is refused by the ABI dispatcher.
        vm.prank(payer);
        (bool ok,) = address(escrow).call{value: 1 ether}(
            abi.encodeCall(PaymentEscrow.depositToken, (merchant, address(token), 1e6, expiry, SALT))
        );
        assertFalse(ok);
        assertEq(address(escrow).balance, 0);
        assertEq(token.balanceOf(address(escrow)), 0);
    }

    function test_depositToken_revertsWithoutAllowance() public {
        vm.prank(payer);
        token.approve(address(escrow), 0);
        vm.prank(payer);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(escrow), 0, 1e6)
        );
        escrow.depositToken(merchant, address(token), 1e6, expiry, SALT);
    }

    function test_depositToken_rejectsFeeOnTransferToken() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(100); // 1 %
        fot.mint(payer, 1_000e18);
        vm.startPrank(payer);
        fot.approve(address(escrow), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.TokenDeliveredLess.selector, 100e18, 99e18));
        escrow.depositToken(merchant, address(fot), 100e18, expiry, SALT);
        vm.stopPrank();
        assertEq(fot.balanceOf(address(escrow)), 0);
        assertEq(fot.balanceOf(payer), 1_000e18);
    }

    // ================================================================ capture

    function test_capture_fullEth_paysMerchantAndFeeAndCloses() public {
        bytes32 id = _depositEth(10 ether, SALT);
        _expectEmit();
        emit PaymentEscrow.PaymentCaptured(id, 10 ether, 0.3 ether);
        _capture(id, 10 ether, 0.3 ether);

        assertEq(merchant.balance, 9.7 ether);
        assertEq(feeRecipient.balance, 0.3 ether);
        assertEq(address(escrow).balance, 0);
        P memory p = _payment(id);
        assertEq(p.captured, 10 ether);
        assertTrue(p.closed);
    }

    function test_capture_partialToken_staysOpenUntilFull() public {
        bytes32 id = _depositToken(100e6, SALT);
        _expectEmit();
        emit PaymentEscrow.PaymentCaptured(id, 40e6, 1e6);
        _capture(id, 40e6, 1e6);
        P memory p = _payment(id);
        assertEq(p.captured, 40e6);
        assertFalse(p.closed);
        assertEq(token.balanceOf(merchant), 39e6);
        assertEq(token.balanceOf(feeRecipient), 1e6);
        assertEq(token.balanceOf(address(escrow)), 60e6);

        _expectEmit();
        emit PaymentEscrow.PaymentCaptured(id, 60e6, 0);
        _capture(id, 60e6, 0);
        p = _payment(id);
        assertEq(p.captured, 100e6);
        assertTrue(p.closed);
        assertEq(token.balanceOf(merchant), 99e6);
        assertEq(token.balanceOf(feeRecipient), 1e6);
        assertEq(token.balanceOf(address(escrow)), 0);
    }

    function test_capture_feeExactlyAtCapPasses() public {
        bytes32 id = _depositEth(1 ether, SALT);
        _capture(id, 1 ether, 0.1 ether); // 10 % of 1 ether
        assertEq(merchant.balance, 0.9 ether);
        assertEq(feeRecipient.balance, 0.1 ether);

        // Not a multiple of 10_000: the cap is floor(amount * maxFeeBps / 10_000).
        bytes32 tid = _depositToken(12_345, SALT);
        _capture(tid, 12_345, 1_234); // 1_234 * 10_000 <= 12_345 * 1_000
        assertEq(token.balanceOf(feeRecipient), 1_234);
    }

    function test_capture_revertsOneWeiAboveCap() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(id, 1 ether, 0.1 ether + 1);

        bytes32 tid = _depositToken(12_345, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(tid, 12_345, 1_235);

        // Tiny captures: 9 units at 10 % allow no fee at all.
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(tid, 9, 1);
        _capture(tid, 10, 1);
        assertEq(_payment(id).captured, 0);
        assertEq(address(escrow).balance, 1 ether);
        assertEq(feeRecipient.balance, 0);
    }

    function test_capture_feeEqualToAmountRevertsBelow100PercentCap() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(id, 1 ether, 1 ether);
        assertEq(feeRecipient.balance, 0);
        assertEq(address(escrow).balance, 1 ether);
    }

    function test_capture_feeEqualToAmountWith100PercentCap() public {
        escrow = _newEscrow(10_000);
        bytes32 id = _depositEth(1 ether, SALT);
        _capture(id, 1 ether, 1 ether);
        assertEq(merchant.balance, 0);
        assertEq(feeRecipient.balance, 1 ether);

        bytes32 id2 = _depositEth(1 ether, keccak256("2"));
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(id2, 0.5 ether, 0.5 ether + 1);
    }

    function test_capture_zeroCapAllowsNoFee() public {
        escrow = _newEscrow(0);
        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(id, 1 ether, 1);
        _capture(id, 1 ether, 0);
        assertEq(merchant.balance, 1 ether);
    }

    function test_capture_feeCapDoesNotOverflowOnHugeAmounts() public {
        // amount * maxFeeBps would overflow uint256; the cap is still exact.
        // forge-lint: disable-next-line(divide-before-multiply)
        uint256 huge = (type(uint256).max / 10_000) * 10_000; // a multiple of 10_000
        token.mint(payer, huge - PAYER_TOKENS);
        bytes32 id = _depositToken(huge, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(id, huge, huge / 10 + 1);
        _capture(id, huge, huge / 10);
        assertEq(token.balanceOf(feeRecipient), huge / 10);
        assertEq(token.balanceOf(merchant), huge - huge / 10);
    }

    function test_capture_onlyOperator() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.capture(id, 1 ether, 0);
        vm.prank(owner);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.capture(id, 1 ether, 0);
    }

    function test_capture_revertsOnUnknownPayment() public {
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.UnknownPayment.selector);
        escrow.capture(keccak256("nope"), 1, 0);
    }

    function test_capture_revertsWhenClosed() public {
        bytes32 id = _depositEth(1 ether, SALT);
        _capture(id, 1 ether, 0);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.PaymentClosed.selector);
        escrow.capture(id, 1, 0);

        bytes32 id2 = _depositEth(1 ether, keccak256("2"));
        vm.startPrank(operator);
        escrow.void(id2);
        vm.expectRevert(PaymentEscrow.PaymentClosed.selector);
        escrow.capture(id2, 1, 0);
        vm.stopPrank();
    }

    function test_capture_revertsAtExpiry() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.warp(expiry - 1);
        _capture(id, 0.5 ether, 0); // one second before: fine
        vm.warp(expiry);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.Expired.selector);
        escrow.capture(id, 0.5 ether, 0);
        assertEq(address(escrow).balance, 0.5 ether);
    }

    function test_capture_revertsOnZeroAmount() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.capture(id, 0, 0);
    }

    function test_capture_revertsOnFeeAboveAmount() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(id, 0.5 ether, 0.5 ether + 1);
    }

    function test_capture_revertsAboveRemaining() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.AmountTooLarge.selector);
        escrow.capture(id, 1 ether + 1, 0);
        _capture(id, 0.75 ether, 0);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.AmountTooLarge.selector);
        escrow.capture(id, 0.25 ether + 1, 0);
        assertEq(_payment(id).captured, 0.75 ether);
    }

    function test_capture_revertsWhenMerchantRejectsEth() public {
        address rejecting = address(new EthRejecter());
        vm.prank(payer);
        bytes32 id = escrow.deposit{value: 1 ether}(rejecting, expiry, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.TransferFailed.selector);
        escrow.capture(id, 1 ether, 0);
        // Nothing changed; the payment can still be voided back to the payer.
        assertEq(_payment(id).captured, 0);
        vm.prank(operator);
        escrow.void(id);
        assertEq(payer.balance, PAYER_ETH);
    }

    // ================================================================ void

    function test_void_returnsRemainderAfterPartialCapture() public {
        bytes32 id = _depositEth(3 ether, SALT);
        _capture(id, 1 ether, 0);
        _expectEmit();
        emit PaymentEscrow.PaymentVoided(id, 2 ether);
        vm.prank(operator);
        escrow.void(id);

        assertEq(payer.balance, PAYER_ETH - 1 ether);
        assertEq(merchant.balance, 1 ether);
        assertEq(address(escrow).balance, 0);
        P memory p = _payment(id);
        assertTrue(p.closed);
        assertEq(p.captured, 1 ether);
    }

    function test_void_token() public {
        bytes32 id = _depositToken(7e6, SALT);
        _expectEmit();
        emit PaymentEscrow.PaymentVoided(id, 7e6);
        vm.prank(operator);
        escrow.void(id);
        assertEq(token.balanceOf(payer), PAYER_TOKENS);
        assertEq(token.balanceOf(address(escrow)), 0);
    }

    function test_void_allowedAfterExpiry() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.warp(expiry + 100);
        vm.prank(operator);
        escrow.void(id);
        assertEq(payer.balance, PAYER_ETH);
    }

    function test_void_revertsForNonOperatorUnknownOrClosed() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.void(id);

        vm.startPrank(operator);
        vm.expectRevert(PaymentEscrow.UnknownPayment.selector);
        escrow.void(keccak256("nope"));
        escrow.void(id);
        vm.expectRevert(PaymentEscrow.PaymentClosed.selector);
        escrow.void(id);
        vm.stopPrank();
        assertEq(payer.balance, PAYER_ETH, "voided once only");
    }

    // ================================================================ refund

    function test_refund_ethPaidFromMerchantReserve() public {
        bytes32 id = _depositEth(5 ether, SALT);
        _capture(id, 5 ether, 0.5 ether);
        vm.prank(merchant);
        escrow.fundRefunds{value: 3 ether}(merchant, ETH, 3 ether); // out of its 4.5 ether
        vm.deal(operator, 7 ether);

        _expectEmit();
        emit PaymentEscrow.PaymentRefunded(id, 2 ether);
        _refund(id, 2 ether);

        assertEq(payer.balance, PAYER_ETH - 5 ether + 2 ether);
        assertEq(operator.balance, 7 ether, "operator pays nothing");
        assertEq(escrow.refundReserve(merchant, ETH), 1 ether);
        assertEq(address(escrow).balance, 1 ether, "only the reserve left");
        assertEq(_payment(id).refunded, 2 ether);

        // Up to what was captured in total, also after the payment is closed.
        _refund(id, 1 ether);
        assertEq(_payment(id).refunded, 3 ether);
        assertEq(escrow.refundReserve(merchant, ETH), 0);
        assertEq(address(escrow).balance, 0);
    }

    function test_refund_tokenPaidFromMerchantReserve() public {
        bytes32 id = _depositToken(50e6, SALT);
        _capture(id, 20e6, 0);
        _fundRefunds(stranger, merchant, address(token), 20e6); // a third party backs the merchant
        token.mint(operator, 9e6);

        _expectEmit();
        emit PaymentEscrow.PaymentRefunded(id, 20e6);
        _refund(id, 20e6);

        assertEq(token.balanceOf(payer), PAYER_TOKENS - 50e6 + 20e6);
        assertEq(token.balanceOf(operator), 9e6, "operator pays nothing");
        assertEq(escrow.refundReserve(merchant, address(token)), 0);
        assertEq(token.balanceOf(address(escrow)), 30e6, "uncaptured deposit untouched");
        assertEq(_payment(id).refunded, 20e6);
    }

    /// A refund takes from the payment's merchant's reserve and from nothing else: other
    /// merchants' reserves, operator liquidity, open deposits and the operator's wallet stay put.
    function test_refund_drainsOnlyOwnMerchantReserve() public {
        address otherMerchant = makeAddr("otherMerchant");
        bytes32 id = _depositEth(4 ether, SALT);
        _capture(id, 3 ether, 0);
        vm.prank(payer);
        escrow.deposit{value: 2 ether}(otherMerchant, expiry, SALT); // an open deposit
        _fundRefunds(merchant, merchant, ETH, 1 ether);
        _fundRefunds(otherMerchant, otherMerchant, ETH, 5 ether);
        vm.deal(operator, 10 ether);
        vm.prank(operator);
        escrow.fund{value: 6 ether}(ETH, 6 ether);
        uint256 escrowBefore = address(escrow).balance; // 1 + 2 + 1 + 5 + 6
        assertEq(escrowBefore, 15 ether);

        // More than the merchant's own reserve: refused, although the escrow holds plenty.
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.refund(id, 1 ether + 1);

        _refund(id, 1 ether);
        assertEq(escrow.refundReserve(merchant, ETH), 0);
        assertEq(escrow.refundReserve(otherMerchant, ETH), 5 ether, "other merchant untouched");
        assertEq(escrow.liquidity(ETH), 6 ether, "liquidity untouched");
        assertEq(operator.balance, 4 ether, "operator wallet untouched");
        assertEq(address(escrow).balance, escrowBefore - 1 ether);
        assertEq(payer.balance, PAYER_ETH - 4 ether - 2 ether + 1 ether);

        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.refund(id, 1);
        assertEq(_payment(id).refunded, 1 ether);
    }

    function test_refund_revertsWithEmptyReserve() public {
        bytes32 id = _depositToken(10e6, SALT);
        _capture(id, 10e6, 0);
        token.mint(operator, 100e6);
        vm.startPrank(operator);
        escrow.fund(address(token), 50e6);
        vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.refund(id, 1);
        vm.stopPrank();
        assertEq(token.balanceOf(operator), 50e6);
        assertEq(escrow.liquidity(address(token)), 50e6);
        assertEq(_payment(id).refunded, 0);
    }

    function test_refund_reserveIsPerAsset() public {
        bytes32 id = _depositToken(10e6, SALT);
        _capture(id, 10e6, 0);
        _fundRefunds(merchant, merchant, ETH, 100 ether); // ETH reserve does not cover a token refund
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.refund(id, 1e6);
        assertEq(escrow.refundReserve(merchant, ETH), 100 ether);
    }

    function test_refund_revertsAfterMerchantWithdrewReserve() public {
        bytes32 id = _depositEth(2 ether, SALT);
        _capture(id, 2 ether, 0);
        _fundRefunds(merchant, merchant, ETH, 2 ether);
        uint256 merchantBefore = merchant.balance;
        vm.prank(merchant);
        escrow.withdrawRefunds(ETH, 2 ether);
        assertEq(merchant.balance, merchantBefore + 2 ether);

        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.refund(id, 1 ether);
        assertEq(_payment(id).refunded, 0);
        assertEq(address(escrow).balance, 0);
    }

    function test_refund_isNotPayable() public {
        bytes32 id = _depositEth(1 ether, SALT);
        _capture(id, 1 ether, 0);
        _fundRefunds(merchant, merchant, ETH, 1 ether);
        vm.deal(operator, 1 ether);
        vm.prank(operator);
        (bool ok,) = address(escrow).call{value: 1 ether}(abi.encodeCall(PaymentEscrow.refund, (id, 1 ether)));
        assertFalse(ok, "refund refuses ETH");
        assertEq(operator.balance, 1 ether);
        assertEq(_payment(id).refunded, 0);
        assertEq(escrow.refundReserve(merchant, ETH), 1 ether);
        assertEq(address(escrow).balance, 1 ether);
    }

    function test_refund_revertsBeyondCaptured() public {
        bytes32 id = _depositEth(5 ether, SALT);
        _fundRefunds(merchant, merchant, ETH, 10 ether);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.AmountTooLarge.selector);
        escrow.refund(id, 1); // nothing captured yet

        _capture(id, 2 ether, 0);
        vm.startPrank(operator);
        escrow.refund(id, 1.5 ether);
        vm.expectRevert(PaymentEscrow.AmountTooLarge.selector);
        escrow.refund(id, 0.5 ether + 1);
        vm.stopPrank();
        assertEq(_payment(id).refunded, 1.5 ether);
        assertEq(escrow.refundReserve(merchant, ETH), 8.5 ether);
    }

    function test_refund_revertsForNonOperatorUnknownOrZero() public {
        bytes32 id = _depositEth(1 ether, SALT);
        _capture(id, 1 ether, 0);
        _fundRefunds(merchant, merchant, ETH, 1 ether);
        address[3] memory notOperators = [payer, merchant, owner];
        for (uint256 i; i < notOperators.length; i++) {
            vm.prank(notOperators[i]);
            vm.expectRevert(PaymentEscrow.NotOperator.selector);
            escrow.refund(id, 1);
        }

        vm.startPrank(operator);
        vm.expectRevert(PaymentEscrow.UnknownPayment.selector);
        escrow.refund(keccak256("nope"), 1);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.refund(id, 0);
        vm.stopPrank();
        assertEq(escrow.refundReserve(merchant, ETH), 1 ether);
    }

    function test_refund_revertsWhenPayerRejectsEth() public {
        address rejecting = address(new EthRejecter());
        vm.deal(rejecting, 1 ether);
        vm.prank(rejecting);
        bytes32 id = escrow.deposit{value: 1 ether}(merchant, expiry, SALT);
        _capture(id, 1 ether, 0);
        _fundRefunds(merchant, merchant, ETH, 1 ether);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.TransferFailed.selector);
        escrow.refund(id, 1 ether);
        assertEq(_payment(id).refunded, 0);
        assertEq(escrow.refundReserve(merchant, ETH), 1 ether, "reserve restored");
    }

    function test_refund_feeOnTransferTokenCannotBeReserved() public {
        // The fee is off while the payment is made and captured, then switched on.
        FeeOnTransferToken fot = new FeeOnTransferToken(0);
        fot.mint(payer, 100e18);
        vm.prank(payer);
        fot.approve(address(escrow), type(uint256).max);
        vm.prank(payer);
        bytes32 id = escrow.depositToken(merchant, address(fot), 100e18, expiry, SALT);
        _capture(id, 100e18, 0);

        fot.setFeeBps(50); // 0.5 %
        vm.startPrank(merchant);
        fot.approve(address(escrow), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.TokenDeliveredLess.selector, 10e18, 9.95e18));
        escrow.fundRefunds(merchant, address(fot), 10e18);
        vm.stopPrank();
        assertEq(escrow.refundReserve(merchant, address(fot)), 0);
        assertEq(fot.balanceOf(merchant), 100e18);

        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.refund(id, 10e18);
    }

    // ================================================================ refund reserves

    function test_fundRefunds_ethByMerchant() public {
        vm.deal(merchant, 3 ether);
        _expectEmit();
        emit PaymentEscrow.RefundReserveFunded(merchant, ETH, merchant, 3 ether);
        vm.prank(merchant);
        escrow.fundRefunds{value: 3 ether}(merchant, ETH, 3 ether);
        assertEq(escrow.refundReserve(merchant, ETH), 3 ether);
        assertEq(address(escrow).balance, 3 ether);
        assertEq(merchant.balance, 0);
    }

    function test_fundRefunds_tokenByAnyoneAddsUp() public {
        token.mint(stranger, 5e6);
        vm.startPrank(stranger);
        token.approve(address(escrow), type(uint256).max);
        _expectEmit();
        emit PaymentEscrow.RefundReserveFunded(merchant, address(token), stranger, 5e6);
        escrow.fundRefunds(merchant, address(token), 5e6);
        vm.stopPrank();
        _fundRefunds(merchant, merchant, address(token), 2e6);

        assertEq(escrow.refundReserve(merchant, address(token)), 7e6);
        assertEq(escrow.refundReserve(stranger, address(token)), 0, "the funder gains no reserve");
        assertEq(token.balanceOf(address(escrow)), 7e6);
        assertEq(token.balanceOf(stranger), 0);
        assertEq(escrow.liquidity(address(token)), 0, "reserves are not liquidity");
    }

    function test_fundRefunds_reverts() public {
        vm.deal(merchant, 5 ether);
        token.mint(merchant, 5e6);
        vm.startPrank(merchant);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        escrow.fundRefunds{value: 1 ether}(address(0), ETH, 1 ether);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.fundRefunds(merchant, ETH, 0);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.fundRefunds(merchant, address(token), 0);
        vm.expectRevert(PaymentEscrow.WrongValue.selector);
        escrow.fundRefunds{value: 1 ether}(merchant, ETH, 2 ether);
        vm.expectRevert(PaymentEscrow.WrongValue.selector);
        escrow.fundRefunds{value: 1 ether}(merchant, address(token), 1e6);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(escrow), 0, 1e6)
        );
        escrow.fundRefunds(merchant, address(token), 1e6);
        vm.stopPrank();
        assertEq(escrow.refundReserve(merchant, ETH), 0);
        assertEq(escrow.refundReserve(merchant, address(token)), 0);
        assertEq(address(escrow).balance, 0);
        assertEq(token.balanceOf(address(escrow)), 0);
    }

    function test_fundRefunds_rejectsFeeOnTransferToken() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(1_000); // 10 %
        fot.mint(merchant, 10e18);
        vm.startPrank(merchant);
        fot.approve(address(escrow), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.TokenDeliveredLess.selector, 10e18, 9e18));
        escrow.fundRefunds(merchant, address(fot), 10e18);
        vm.stopPrank();
        assertEq(escrow.refundReserve(merchant, address(fot)), 0);
        assertEq(fot.balanceOf(merchant), 10e18);
    }

    function test_withdrawRefunds_ethAndTokenToMerchantOnly() public {
        _fundRefunds(stranger, merchant, ETH, 3 ether);
        _fundRefunds(stranger, merchant, address(token), 8e6);

        vm.startPrank(merchant);
        _expectEmit();
        emit PaymentEscrow.RefundReserveWithdrawn(merchant, ETH, 1 ether);
        escrow.withdrawRefunds(ETH, 1 ether);
        _expectEmit();
        emit PaymentEscrow.RefundReserveWithdrawn(merchant, address(token), 8e6);
        escrow.withdrawRefunds(address(token), 8e6);
        vm.stopPrank();

        assertEq(merchant.balance, 1 ether);
        assertEq(token.balanceOf(merchant), 8e6);
        assertEq(escrow.refundReserve(merchant, ETH), 2 ether);
        assertEq(escrow.refundReserve(merchant, address(token)), 0);
        assertEq(address(escrow).balance, 2 ether);
        assertEq(token.balanceOf(address(escrow)), 0);
        assertEq(stranger.balance, 0, "the funder gets nothing back");
    }

    function test_withdrawRefunds_reverts() public {
        _fundRefunds(merchant, merchant, ETH, 1 ether);
        _depositEth(5 ether, SALT);
        vm.deal(operator, 5 ether);
        vm.prank(operator);
        escrow.fund{value: 5 ether}(ETH, 5 ether);

        vm.startPrank(merchant);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.withdrawRefunds(ETH, 0);
        vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.withdrawRefunds(ETH, 1 ether + 1);
        vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.withdrawRefunds(address(token), 1);
        vm.stopPrank();
        // Nobody else can take the merchant's reserve, not even the operator or the owner.
        address[3] memory others = [operator, owner, stranger];
        for (uint256 i; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
            escrow.withdrawRefunds(ETH, 1);
        }
        assertEq(escrow.refundReserve(merchant, ETH), 1 ether);
        assertEq(address(escrow).balance, 11 ether);
    }

    function test_withdrawRefunds_revertsWhenMerchantRejectsEth() public {
        address rejecting = address(new EthRejecter());
        _fundRefunds(stranger, rejecting, ETH, 1 ether);
        vm.prank(rejecting);
        vm.expectRevert(PaymentEscrow.TransferFailed.selector);
        escrow.withdrawRefunds(ETH, 1 ether);
        assertEq(escrow.refundReserve(rejecting, ETH), 1 ether);
    }

    // ================================================================ reclaim

    function test_reclaim_afterExpiryReturnsRemainder() public {
        bytes32 id = _depositEth(4 ether, SALT);
        _capture(id, 1 ether, 0.1 ether);
        vm.warp(expiry);
        _expectEmit();
        emit PaymentEscrow.PaymentReclaimed(id, 3 ether);
        vm.prank(payer);
        escrow.reclaim(id);

        assertEq(payer.balance, PAYER_ETH - 1 ether);
        assertEq(address(escrow).balance, 0);
        assertTrue(_payment(id).closed);
    }

    function test_reclaim_token() public {
        bytes32 id = _depositToken(9e6, SALT);
        vm.warp(expiry + 1 days);
        _expectEmit();
        emit PaymentEscrow.PaymentReclaimed(id, 9e6);
        vm.prank(payer);
        escrow.reclaim(id);
        assertEq(token.balanceOf(payer), PAYER_TOKENS);
        assertEq(token.balanceOf(address(escrow)), 0);
    }

    function test_reclaim_revertsBeforeExpiry() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.warp(expiry - 1);
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.NotExpired.selector);
        escrow.reclaim(id);
        assertEq(address(escrow).balance, 1 ether);
    }

    function test_reclaim_onlyPayer() public {
        bytes32 id = _depositEth(1 ether, SALT);
        vm.warp(expiry);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.NotPayer.selector);
        escrow.reclaim(id);
        vm.prank(merchant);
        vm.expectRevert(PaymentEscrow.NotPayer.selector);
        escrow.reclaim(id);
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.UnknownPayment.selector);
        escrow.reclaim(keccak256("nope"));
    }

    function test_reclaim_revertsWhenClosed() public {
        bytes32 full = _depositEth(1 ether, SALT);
        _capture(full, 1 ether, 0);
        bytes32 voided = _depositEth(1 ether, keccak256("v"));
        vm.prank(operator);
        escrow.void(voided);
        bytes32 reclaimed = _depositEth(1 ether, keccak256("r"));
        vm.warp(expiry);
        vm.startPrank(payer);
        escrow.reclaim(reclaimed);
        vm.expectRevert(PaymentEscrow.PaymentClosed.selector);
        escrow.reclaim(reclaimed);
        vm.expectRevert(PaymentEscrow.PaymentClosed.selector);
        escrow.reclaim(full);
        vm.expectRevert(PaymentEscrow.PaymentClosed.selector);
        escrow.reclaim(voided);
        vm.stopPrank();
        assertEq(payer.balance, PAYER_ETH - 1 ether);
    }

    function test_reclaim_revertsWhenPayerRejectsEth() public {
        EthRejecter rejecting = new EthRejecter();
        vm.deal(address(rejecting), 1 ether);
        vm.prank(address(rejecting));
        bytes32 id = escrow.deposit{value: 1 ether}(merchant, expiry, SALT);
        vm.warp(expiry);
        vm.prank(address(rejecting));
        vm.expectRevert(PaymentEscrow.TransferFailed.selector);
        escrow.reclaim(id);
        assertFalse(_payment(id).closed);
        assertEq(address(escrow).balance, 1 ether);
    }

    // ================================================================ liquidity: fund / withdraw

    function test_fund_eth() public {
        vm.deal(operator, 5 ether);
        _expectEmit();
        emit PaymentEscrow.LiquidityFunded(ETH, 5 ether);
        vm.prank(operator);
        escrow.fund{value: 5 ether}(ETH, 5 ether);
        assertEq(escrow.liquidity(ETH), 5 ether);
        assertEq(address(escrow).balance, 5 ether);
    }

    function test_fund_token() public {
        token.mint(operator, 70e6);
        _expectEmit();
        emit PaymentEscrow.LiquidityFunded(address(token), 70e6);
        vm.prank(operator);
        escrow.fund(address(token), 70e6);
        assertEq(escrow.liquidity(address(token)), 70e6);
        assertEq(token.balanceOf(address(escrow)), 70e6);
        assertEq(token.balanceOf(operator), 0);
    }

    function test_fund_reverts() public {
        vm.deal(operator, 5 ether);
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.fund{value: 1 ether}(ETH, 1 ether);

        vm.startPrank(operator);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.fund(ETH, 0);
        vm.expectRevert(PaymentEscrow.WrongValue.selector);
        escrow.fund{value: 1 ether}(ETH, 2 ether);
        vm.expectRevert(PaymentEscrow.WrongValue.selector);
        escrow.fund{value: 1 ether}(address(token), 1e6);
        vm.stopPrank();
        assertEq(escrow.liquidity(ETH), 0);
        assertEq(address(escrow).balance, 0);
    }

    function test_fund_rejectsFeeOnTransferToken() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(1_000); // 10 %
        fot.mint(operator, 10e18);
        vm.startPrank(operator);
        fot.approve(address(escrow), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.TokenDeliveredLess.selector, 10e18, 9e18));
        escrow.fund(address(fot), 10e18);
        vm.stopPrank();
        assertEq(escrow.liquidity(address(fot)), 0);
    }

    function test_withdraw_ethAndTokenGoToTreasury() public {
        vm.deal(operator, 5 ether);
        token.mint(operator, 10e6);
        vm.startPrank(operator);
        escrow.fund{value: 5 ether}(ETH, 5 ether);
        escrow.fund(address(token), 10e6);

        _expectEmit();
        emit PaymentEscrow.LiquidityWithdrawn(ETH, treasury, 2 ether);
        escrow.withdraw(ETH, 2 ether);
        _expectEmit();
        emit PaymentEscrow.LiquidityWithdrawn(address(token), treasury, 10e6);
        escrow.withdraw(address(token), 10e6);
        vm.stopPrank();

        assertEq(treasury.balance, 2 ether);
        assertEq(token.balanceOf(treasury), 10e6);
        assertEq(operator.balance, 0, "nothing to the operator");
        assertEq(token.balanceOf(operator), 0);
        assertEq(escrow.liquidity(ETH), 3 ether);
        assertEq(escrow.liquidity(address(token)), 0);
        assertEq(address(escrow).balance, 3 ether);
    }

    function test_withdraw_oldSignatureWithRecipientIsGone() public {
        vm.deal(operator, 1 ether);
        vm.startPrank(operator);
        escrow.fund{value: 1 ether}(ETH, 1 ether);
        (bool ok,) =
            address(escrow).call(abi.encodeWithSignature("withdraw(address,uint256,address)", ETH, 1 ether, operator));
        vm.stopPrank();
        assertFalse(ok);
        assertEq(operator.balance, 0);
        assertEq(escrow.liquidity(ETH), 1 ether);
    }

    function test_withdraw_treasuryChangeNeedsDelay() public {
        address next = makeAddr("nextTreasury");
        vm.deal(operator, 4 ether);
        vm.prank(operator);
        escrow.fund{value: 4 ether}(ETH, 4 ether);

        vm.prank(owner);
        escrow.proposeChange(PaymentEscrow.Role.Treasury, next);
        vm.prank(operator);
        escrow.withdraw(ETH, 1 ether); // during the delay: still the old treasury
        assertEq(treasury.balance, 1 ether);
        assertEq(next.balance, 0);

        vm.warp(block.timestamp + CHANGE_DELAY - 1);
        vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.ChangeNotReady.selector, uint64(block.timestamp + 1)));
        escrow.executeChange(PaymentEscrow.Role.Treasury);
        vm.warp(block.timestamp + 1);
        escrow.executeChange(PaymentEscrow.Role.Treasury);

        _expectEmit();
        emit PaymentEscrow.LiquidityWithdrawn(ETH, next, 3 ether);
        vm.prank(operator);
        escrow.withdraw(ETH, 3 ether);
        assertEq(next.balance, 3 ether);
        assertEq(treasury.balance, 1 ether);
    }

    function test_withdraw_neverTouchesDepositsOrReserves() public {
        _depositEth(10 ether, SALT);
        _depositToken(10e6, SALT);
        _fundRefunds(merchant, merchant, ETH, 7 ether);
        _fundRefunds(merchant, merchant, address(token), 7e6);
        vm.deal(operator, 1 ether);
        vm.startPrank(operator);
        escrow.fund{value: 1 ether}(ETH, 1 ether);
        vm.expectRevert(PaymentEscrow.InsufficientLiquidity.selector);
        escrow.withdraw(ETH, 1 ether + 1);
        vm.expectRevert(PaymentEscrow.InsufficientLiquidity.selector);
        escrow.withdraw(address(token), 1);
        vm.stopPrank();
        assertEq(address(escrow).balance, 18 ether);
        assertEq(token.balanceOf(address(escrow)), 17e6);
        assertEq(treasury.balance, 0);
    }

    function test_withdraw_reverts() public {
        vm.deal(operator, 1 ether);
        vm.prank(operator);
        escrow.fund{value: 1 ether}(ETH, 1 ether);

        address[3] memory notOperators = [owner, treasury, stranger];
        for (uint256 i; i < notOperators.length; i++) {
            vm.prank(notOperators[i]);
            vm.expectRevert(PaymentEscrow.NotOperator.selector);
            escrow.withdraw(ETH, 1 ether);
        }

        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.withdraw(ETH, 0);

        // A treasury that rejects ETH makes ETH withdrawals fail; liquidity stays.
        _changeRole(PaymentEscrow.Role.Treasury, address(new EthRejecter()));
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.TransferFailed.selector);
        escrow.withdraw(ETH, 1 ether);
        assertEq(escrow.liquidity(ETH), 1 ether);
    }

    // ================================================================ settle

    function test_settle_paysMerchantFromLiquidityOnce() public {
        token.mint(operator, 100e6);
        vm.prank(operator);
        escrow.fund(address(token), 100e6);
        bytes32 sid = keccak256("btc:txid:0");

        _expectEmit();
        emit PaymentEscrow.Settled(sid, merchant, address(token), 30e6, "btc:abcd:0");
        vm.prank(operator);
        escrow.settle(sid, merchant, address(token), 30e6, "btc:abcd:0");

        assertEq(token.balanceOf(merchant), 30e6);
        assertEq(escrow.liquidity(address(token)), 70e6);
        assertTrue(escrow.settlementUsed(sid));

        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.SettlementAlreadyUsed.selector);
        escrow.settle(sid, merchant, address(token), 30e6, "btc:abcd:0");
        assertEq(token.balanceOf(merchant), 30e6);
    }

    function test_settle_eth() public {
        vm.deal(operator, 2 ether);
        vm.prank(operator);
        escrow.fund{value: 2 ether}(ETH, 2 ether);
        bytes32 sid = keccak256("card:pi_1");
        _expectEmit();
        emit PaymentEscrow.Settled(sid, merchant, ETH, 2 ether, "pi_1");
        vm.prank(operator);
        escrow.settle(sid, merchant, ETH, 2 ether, "pi_1");
        assertEq(merchant.balance, 2 ether);
        assertEq(escrow.liquidity(ETH), 0);
        assertEq(address(escrow).balance, 0);
    }

    function test_settle_reverts() public {
        _depositEth(5 ether, SALT); // deposits are not liquidity
        vm.deal(operator, 1 ether);
        vm.prank(operator);
        escrow.fund{value: 1 ether}(ETH, 1 ether);
        bytes32 sid = keccak256("s");

        vm.prank(stranger);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.settle(sid, merchant, ETH, 1, "x");

        vm.startPrank(operator);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        escrow.settle(sid, address(0), ETH, 1, "x");
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.settle(sid, merchant, ETH, 0, "x");
        vm.expectRevert(PaymentEscrow.InsufficientLiquidity.selector);
        escrow.settle(sid, merchant, ETH, 1 ether + 1, "x");
        vm.stopPrank();
        assertFalse(escrow.settlementUsed(sid), "failed settle leaves the id unused");
        assertEq(address(escrow).balance, 6 ether);
    }
}
