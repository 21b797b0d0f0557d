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
        emit PaymentEscrow.OperatorChanged(address(0), operator);
        vm.expectEmit(true, true, true, true, predicted);
        emit PaymentEscrow.FeeRecipientChanged(address(0), feeRecipient);
        PaymentEscrow e = new PaymentEscrow(owner, operator, feeRecipient);
        assertEq(address(e), predicted);
        assertEq(e.owner(), owner);
        assertEq(e.operator(), operator);
        assertEq(e.feeRecipient(), feeRecipient);
    }

    function test_constructor_revertsOnZeroAddresses() public {
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        new PaymentEscrow(owner, address(0), feeRecipient);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        new PaymentEscrow(owner, operator, address(0));
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new PaymentEscrow(address(0), operator, feeRecipient);
    }

    function test_setOperator_movesOperatorRights() public {
        address next = makeAddr("nextOperator");
        _expectEmit();
        emit PaymentEscrow.OperatorChanged(operator, next);
        vm.prank(owner);
        escrow.setOperator(next);
        assertEq(escrow.operator(), next);

        bytes32 id = _depositEth(1 ether, SALT);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.void(id);
        vm.prank(next);
        escrow.void(id);
        assertEq(payer.balance, PAYER_ETH);
    }

    function test_setFeeRecipient_redirectsFees() public {
        address next = makeAddr("nextFeeRecipient");
        _expectEmit();
        emit PaymentEscrow.FeeRecipientChanged(feeRecipient, next);
        vm.prank(owner);
        escrow.setFeeRecipient(next);
        assertEq(escrow.feeRecipient(), next);

        bytes32 id = _depositEth(1 ether, SALT);
        _capture(id, 1 ether, 0.1 ether);
        assertEq(next.balance, 0.1 ether);
        assertEq(feeRecipient.balance, 0);
    }

    function test_setters_onlyOwner() public {
        vm.startPrank(operator);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, operator));
        escrow.setOperator(stranger);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, operator));
        escrow.setFeeRecipient(stranger);
        vm.stopPrank();
    }

    function test_setters_revertOnZeroAddress() public {
        vm.startPrank(owner);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        escrow.setOperator(address(0));
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        escrow.setFeeRecipient(address(0));
        vm.stopPrank();
        assertEq(escrow.operator(), operator);
        assertEq(escrow.feeRecipient(), feeRecipient);
    }

    function test_ownership_twoStepTransfer() public {
        address next = makeAddr("nextOwner");
        vm.prank(owner);
        escrow.transferOwnership(next);
        assertEq(escrow.owner(), owner, "owner unchanged until accepted");
        vm.prank(next);
        escrow.acceptOwnership();
        assertEq(escrow.owner(), next);
        vm.prank(next);
        escrow.setOperator(stranger);
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
        PaymentEscrow other = new PaymentEscrow(owner, operator, feeRecipient);
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

    function test_capture_feeEqualToAmountPaysOnlyFeeRecipient() public {
        bytes32 id = _depositEth(1 ether, SALT);
        _capture(id, 1 ether, 1 ether);
        assertEq(merchant.balance, 0);
        assertEq(feeRecipient.balance, 1 ether);
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

    function test_refund_ethFundedByOperator() public {
        bytes32 id = _depositEth(5 ether, SALT);
        _capture(id, 5 ether, 0.5 ether);
        vm.deal(operator, 3 ether);

        _expectEmit();
        emit PaymentEscrow.PaymentRefunded(id, 2 ether);
        vm.prank(operator);
        escrow.refund{value: 2 ether}(id, 2 ether);

        assertEq(payer.balance, PAYER_ETH - 5 ether + 2 ether);
        assertEq(operator.balance, 1 ether);
        assertEq(address(escrow).balance, 0, "refunds pass through");
        assertEq(_payment(id).refunded, 2 ether);

        // Up to what was captured in total, also after the payment is closed.
        vm.prank(operator);
        escrow.refund{value: 1 ether}(id, 1 ether);
        assertEq(_payment(id).refunded, 3 ether);
    }

    function test_refund_tokenPulledFromOperator() public {
        bytes32 id = _depositToken(50e6, SALT);
        _capture(id, 20e6, 0);
        token.mint(operator, 20e6);

        _expectEmit();
        emit PaymentEscrow.PaymentRefunded(id, 20e6);
        vm.prank(operator);
        escrow.refund(id, 20e6);

        assertEq(token.balanceOf(payer), PAYER_TOKENS - 50e6 + 20e6);
        assertEq(token.balanceOf(operator), 0);
        assertEq(token.balanceOf(address(escrow)), 30e6, "uncaptured deposit untouched");
        assertEq(_payment(id).refunded, 20e6);
    }

    function test_refund_revertsBeyondCaptured() public {
        bytes32 id = _depositEth(5 ether, SALT);
        vm.deal(operator, 10 ether);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.AmountTooLarge.selector);
        escrow.refund{value: 1}(id, 1); // nothing captured yet

        _capture(id, 2 ether, 0);
        vm.startPrank(operator);
        escrow.refund{value: 1.5 ether}(id, 1.5 ether);
        vm.expectRevert(PaymentEscrow.AmountTooLarge.selector);
        escrow.refund{value: 0.5 ether + 1}(id, 0.5 ether + 1);
        vm.stopPrank();
        assertEq(_payment(id).refunded, 1.5 ether);
    }

    function test_refund_revertsForNonOperatorUnknownOrZero() public {
        bytes32 id = _depositEth(1 ether, SALT);
        _capture(id, 1 ether, 0);
        vm.prank(payer);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.refund{value: 1}(id, 1);

        vm.deal(operator, 1 ether);
        vm.startPrank(operator);
        vm.expectRevert(PaymentEscrow.UnknownPayment.selector);
        escrow.refund{value: 1}(keccak256("nope"), 1);
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.refund(id, 0);
        vm.stopPrank();
    }

    function test_refund_revertsOnWrongValue() public {
        bytes32 ethId = _depositEth(1 ether, SALT);
        _capture(ethId, 1 ether, 0);
        bytes32 tokId = _depositToken(1e6, SALT);
        _capture(tokId, 1e6, 0);
        token.mint(operator, 1e6);
        vm.deal(operator, 2 ether);

        vm.startPrank(operator);
        vm.expectRevert(PaymentEscrow.WrongValue.selector);
        escrow.refund{value: 0.5 ether}(ethId, 1 ether);
        vm.expectRevert(PaymentEscrow.WrongValue.selector);
        escrow.refund{value: 1 ether + 1}(ethId, 1 ether);
        vm.expectRevert(PaymentEscrow.WrongValue.selector);
        escrow.refund{value: 1}(tokId, 1e6);
        vm.stopPrank();
        assertEq(operator.balance, 2 ether);
        assertEq(address(escrow).balance, 0);
    }

    function test_refund_rejectsFeeOnTransferToken() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(0); // fee switched off at deposit
        fot.mint(payer, 100e18);
        fot.mint(operator, 100e18);
        vm.prank(payer);
        fot.approve(address(escrow), type(uint256).max);
        vm.prank(operator);
        fot.approve(address(escrow), type(uint256).max);
        vm.prank(payer);
        bytes32 id = escrow.depositToken(merchant, address(fot), 100e18, expiry, SALT);
        _capture(id, 100e18, 0);

        fot.setFeeBps(50); // 0.5 %
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.TokenDeliveredLess.selector, 10e18, 9.95e18));
        escrow.refund(id, 10e18);
        assertEq(_payment(id).refunded, 0);
        assertEq(fot.balanceOf(operator), 100e18);
    }

    function test_refund_revertsWhenPayerRejectsEth() public {
        address rejecting = address(new EthRejecter());
        vm.deal(rejecting, 1 ether);
        vm.prank(rejecting);
        bytes32 id = escrow.deposit{value: 1 ether}(merchant, expiry, SALT);
        _capture(id, 1 ether, 0);
        vm.deal(operator, 1 ether);
        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.TransferFailed.selector);
        escrow.refund{value: 1 ether}(id, 1 ether);
        assertEq(_payment(id).refunded, 0);
        assertEq(operator.balance, 1 ether);
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

    function test_withdraw_ethAndToken() public {
        vm.deal(operator, 5 ether);
        token.mint(operator, 10e6);
        vm.startPrank(operator);
        escrow.fund{value: 5 ether}(ETH, 5 ether);
        escrow.fund(address(token), 10e6);

        _expectEmit();
        emit PaymentEscrow.LiquidityWithdrawn(ETH, stranger, 2 ether);
        escrow.withdraw(ETH, 2 ether, stranger);
        _expectEmit();
        emit PaymentEscrow.LiquidityWithdrawn(address(token), stranger, 10e6);
        escrow.withdraw(address(token), 10e6, stranger);
        vm.stopPrank();

        assertEq(stranger.balance, 2 ether);
        assertEq(token.balanceOf(stranger), 10e6);
        assertEq(escrow.liquidity(ETH), 3 ether);
        assertEq(escrow.liquidity(address(token)), 0);
        assertEq(address(escrow).balance, 3 ether);
    }

    function test_withdraw_neverTouchesDeposits() public {
        _depositEth(10 ether, SALT);
        _depositToken(10e6, SALT);
        vm.deal(operator, 1 ether);
        vm.startPrank(operator);
        escrow.fund{value: 1 ether}(ETH, 1 ether);
        vm.expectRevert(PaymentEscrow.InsufficientLiquidity.selector);
        escrow.withdraw(ETH, 1 ether + 1, operator);
        vm.expectRevert(PaymentEscrow.InsufficientLiquidity.selector);
        escrow.withdraw(address(token), 1, operator);
        vm.stopPrank();
        assertEq(address(escrow).balance, 11 ether);
        assertEq(token.balanceOf(address(escrow)), 10e6);
    }

    function test_withdraw_reverts() public {
        vm.deal(operator, 1 ether);
        vm.prank(operator);
        escrow.fund{value: 1 ether}(ETH, 1 ether);

        vm.prank(owner);
        vm.expectRevert(PaymentEscrow.NotOperator.selector);
        escrow.withdraw(ETH, 1 ether, owner);

        address rejecting = address(new EthRejecter());
        vm.startPrank(operator);
        vm.expectRevert(PaymentEscrow.ZeroAddress.selector);
        escrow.withdraw(ETH, 1 ether, address(0));
        vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
        escrow.withdraw(ETH, 0, operator);
        vm.expectRevert(PaymentEscrow.TransferFailed.selector);
        escrow.withdraw(ETH, 1 ether, rejecting);
        vm.stopPrank();
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
