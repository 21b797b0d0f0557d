// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {PaymentEscrow} from "../src/PaymentEscrow.sol";
import {EscrowBase} from "./EscrowBase.sol";

/// Fuzz tests: amounts, the fee cap, refunds from merchants' reserves, expiry and role-change delays
/// against time, and the payment id binding.
contract PaymentEscrowFuzzTest is EscrowBase {
    // ------------------------------------------------------------ id binding

    struct Terms {
        address merchant;
        address token;
        uint256 amount;
        uint64 expiry;
        bytes32 salt;
    }

    function _id(PaymentEscrow e, Terms memory t) internal view returns (bytes32) {
        return e.paymentId(t.merchant, t.token, t.amount, t.expiry, t.salt);
    }

    /// Changing any single term (by a non-zero delta) gives a different id.
    function testFuzz_paymentId_bindsEveryTerm(Terms memory t, uint256 which, uint64 delta) public view {
        vm.assume(delta != 0);
        bytes32 original = _id(escrow, t);
        Terms memory u = Terms(t.merchant, t.token, t.amount, t.expiry, t.salt);
        which = _bound(which, 0, 4);
        if (which == 0) u.merchant = address(uint160(t.merchant) ^ uint160(delta));
        else if (which == 1) u.token = address(uint160(t.token) ^ uint160(delta));
        else if (which == 2) u.amount = t.amount ^ delta;
        else if (which == 3) u.expiry = t.expiry ^ delta;
        else u.salt = t.salt ^ bytes32(uint256(delta));
        assertNotEq(_id(escrow, u), original);
    }

    /// The same terms give a different id on another chain.
    function testFuzz_paymentId_bindsChain(Terms memory t, uint64 otherChain) public {
        vm.assume(otherChain != block.chainid);
        bytes32 here = _id(escrow, t);
        vm.chainId(otherChain);
        assertNotEq(_id(escrow, t), here);
    }

    /// A deposit is stored under exactly the id that paymentId gives for its terms, and a deposit
    /// under altered terms never lands on the relay's id.
    function testFuzz_deposit_landsOnTermsId(uint256 amount, uint64 ttl, bytes32 salt, bytes32 otherSalt) public {
        amount = _bound(amount, 1, PAYER_ETH);
        ttl = uint64(_bound(ttl, 1, 365 days));
        vm.assume(salt != otherSalt);
        uint64 exp = uint64(block.timestamp) + ttl;
        bytes32 want = escrow.paymentId(merchant, ETH, amount, exp, salt);
        vm.prank(payer);
        bytes32 got = escrow.deposit{value: amount}(merchant, exp, otherSalt);
        assertNotEq(got, want);
        (address p,,,,,,,) = escrow.payments(want);
        assertEq(p, address(0), "relay's id stays unpaid");
    }

    // ------------------------------------------------------------ amounts

    /// capture + fee + refund on ETH: every party ends with what the terms say, and the refund
    /// comes out of the merchant's reserve, never the operator's wallet or the deposit.
    function testFuzz_captureFeeRefund_eth(uint256 amount, uint256 captureAmt, uint256 fee, uint256 refundAmt) public {
        amount = _bound(amount, 1, PAYER_ETH);
        captureAmt = _bound(captureAmt, 1, amount);
        fee = _bound(fee, 0, captureAmt * MAX_FEE_BPS / 10_000);
        refundAmt = _bound(refundAmt, 1, captureAmt);

        bytes32 id = _depositEth(amount, "fuzz");
        _capture(id, captureAmt, fee);
        assertEq(merchant.balance, captureAmt - fee);
        assertEq(feeRecipient.balance, fee);
        assertEq(address(escrow).balance, amount - captureAmt);

        vm.deal(operator, 1 ether);
        _fundRefunds(merchant, merchant, ETH, refundAmt);
        _refund(id, refundAmt);
        assertEq(address(escrow).balance, amount - captureAmt, "refund does not touch the deposit");
        assertEq(operator.balance, 1 ether, "operator pays nothing");
        assertEq(escrow.refundReserve(merchant, ETH), 0);

        vm.prank(operator);
        if (captureAmt < amount) {
            escrow.void(id);
        } else {
            vm.expectRevert(PaymentEscrow.PaymentClosed.selector);
            escrow.void(id);
        }
        assertEq(address(escrow).balance, 0);
        assertEq(payer.balance, PAYER_ETH - captureAmt + refundAmt);
        (,,,,, uint256 captured, uint256 refunded, bool closed) = escrow.payments(id);
        assertEq(captured, captureAmt);
        assertEq(refunded, refundAmt);
        assertTrue(closed);
    }

    /// The fee cap: a capture passes exactly when `fee * 10_000 <= amount * maxFeeBps`, for any
    /// cap and any amount small enough for that product not to overflow.
    function testFuzz_feeCap(uint16 maxFeeBps, uint256 amount, uint256 fee) public {
        maxFeeBps = uint16(_bound(maxFeeBps, 0, 10_000));
        amount = _bound(amount, 1, PAYER_TOKENS);
        fee = _bound(fee, 0, amount + 2);
        escrow = _newEscrow(maxFeeBps);
        vm.prank(payer);
        token.approve(address(escrow), type(uint256).max);
        bytes32 id = _depositToken(amount, "fee");

        bool allowed = fee * 10_000 <= amount * maxFeeBps;
        vm.prank(operator);
        if (!allowed) vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(id, amount, fee);
        assertEq(token.balanceOf(feeRecipient), allowed ? fee : 0);
        assertEq(token.balanceOf(merchant), allowed ? amount - fee : 0);
        assertEq(token.balanceOf(address(escrow)), allowed ? 0 : amount);
    }

    /// The fee cap stays exact (no overflow panic) for amounts where `amount * maxFeeBps` overflows
    /// 256 bits: the largest allowed fee is floor(amount * maxFeeBps / 10_000), here computed
    /// independently with OpenZeppelin's 512-bit `Math.mulDiv`.
    function testFuzz_feeCap_hugeAmounts(uint16 maxFeeBps, uint256 amount) public {
        maxFeeBps = uint16(_bound(maxFeeBps, 0, 10_000));
        amount = _bound(amount, type(uint256).max / 10_000, type(uint256).max - PAYER_TOKENS);
        escrow = _newEscrow(maxFeeBps);
        token.mint(payer, amount - PAYER_TOKENS);
        vm.prank(payer);
        token.approve(address(escrow), type(uint256).max);
        bytes32 id = _depositToken(amount, "huge");
        uint256 cap = Math.mulDiv(amount, maxFeeBps, 10_000);

        vm.prank(operator);
        vm.expectRevert(PaymentEscrow.FeeTooLarge.selector);
        escrow.capture(id, amount, cap + 1);
        _capture(id, amount, cap);
        assertEq(token.balanceOf(feeRecipient), cap);
    }

    /// Token: a sequence of partial captures never exceeds the deposit; the remainder voids back.
    function testFuzz_partialCaptures_token(uint256 amount, uint256[4] memory parts, uint16 feeBps) public {
        amount = _bound(amount, 1, PAYER_TOKENS);
        feeBps = uint16(_bound(feeBps, 0, MAX_FEE_BPS));
        bytes32 id = _depositToken(amount, "fuzz");
        uint256 captured;
        uint256 fees;
        for (uint256 i; i < parts.length; i++) {
            uint256 remaining = amount - captured;
            if (remaining == 0) break;
            uint256 part = _bound(parts[i], 0, remaining + 1);
            uint256 fee = part * feeBps / 10_000;
            vm.prank(operator);
            if (part == 0) {
                vm.expectRevert(PaymentEscrow.ZeroAmount.selector);
                escrow.capture(id, part, fee);
            } else if (part > remaining) {
                vm.expectRevert(PaymentEscrow.AmountTooLarge.selector);
                escrow.capture(id, part, fee);
            } else {
                escrow.capture(id, part, fee);
                captured += part;
                fees += fee;
            }
        }
        assertEq(token.balanceOf(merchant), captured - fees);
        assertEq(token.balanceOf(feeRecipient), fees);
        assertEq(token.balanceOf(address(escrow)), amount - captured);
        (,,,,,,, bool closed) = escrow.payments(id);
        assertEq(closed, captured == amount);
        if (!closed) {
            vm.prank(operator);
            escrow.void(id);
        }
        assertEq(token.balanceOf(address(escrow)), 0);
        assertEq(token.balanceOf(payer), PAYER_TOKENS - captured);
    }

    /// Refunds in several steps never exceed the total captured nor the merchant's reserve, and
    /// are paid from that reserve only.
    function testFuzz_refundsCappedByCapturedAndReserve(
        uint256 amount,
        uint256 captureAmt,
        uint256 reserve,
        uint256 r1,
        uint256 r2
    ) public {
        amount = _bound(amount, 1, PAYER_TOKENS);
        captureAmt = _bound(captureAmt, 1, amount);
        reserve = _bound(reserve, 1, captureAmt * 2);
        r1 = _bound(r1, 1, captureAmt * 2);
        r2 = _bound(r2, 1, captureAmt * 2);
        bytes32 id = _depositToken(amount, "fuzz");
        _capture(id, captureAmt, 0);
        _fundRefunds(stranger, merchant, address(token), reserve);
        token.mint(operator, r1 + r2);

        uint256 refunded;
        uint256[2] memory rs = [r1, r2];
        for (uint256 i; i < 2; i++) {
            vm.prank(operator);
            if (refunded + rs[i] > captureAmt) {
                vm.expectRevert(PaymentEscrow.AmountTooLarge.selector);
                escrow.refund(id, rs[i]);
            } else if (refunded + rs[i] > reserve) {
                vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
                escrow.refund(id, rs[i]);
            } else {
                escrow.refund(id, rs[i]);
                refunded += rs[i];
            }
        }
        (,,,,,, uint256 storedRefunded,) = escrow.payments(id);
        assertEq(storedRefunded, refunded);
        assertLe(refunded, captureAmt);
        assertLe(refunded, reserve);
        assertEq(escrow.refundReserve(merchant, address(token)), reserve - refunded);
        assertEq(token.balanceOf(payer), PAYER_TOKENS - amount + refunded);
        assertEq(token.balanceOf(operator), r1 + r2, "operator pays nothing");
        assertEq(token.balanceOf(address(escrow)), amount - captureAmt + reserve - refunded);
    }

    /// With two merchants' reserves, operator liquidity and an open deposit in the escrow, a
    /// refund succeeds exactly when its own merchant's reserve covers it, and moves only that.
    function testFuzz_refundOnlyFromOwnReserve(uint256 own, uint256 other, uint256 liq, uint256 amount) public {
        own = _bound(own, 0, 10 ether);
        other = _bound(other, 0, 10 ether);
        liq = _bound(liq, 0, 10 ether);
        amount = _bound(amount, 1, 5 ether);
        address otherMerchant = makeAddr("otherMerchant");
        bytes32 id = _depositEth(5 ether, "own");
        _capture(id, 5 ether, 0);
        vm.prank(payer);
        escrow.deposit{value: 1 ether}(otherMerchant, expiry, "open");
        if (own > 0) _fundRefunds(merchant, merchant, ETH, own);
        if (other > 0) _fundRefunds(otherMerchant, otherMerchant, ETH, other);
        if (liq > 0) {
            vm.deal(operator, liq);
            vm.prank(operator);
            escrow.fund{value: liq}(ETH, liq);
        }
        vm.deal(operator, 3 ether);
        uint256 escrowBefore = address(escrow).balance;

        vm.prank(operator);
        if (amount > own) vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.refund(id, amount);
        uint256 paid = amount > own ? 0 : amount;
        assertEq(escrow.refundReserve(merchant, ETH), own - paid);
        assertEq(escrow.refundReserve(otherMerchant, ETH), other);
        assertEq(escrow.liquidity(ETH), liq);
        assertEq(operator.balance, 3 ether);
        assertEq(address(escrow).balance, escrowBefore - paid);
        assertEq(payer.balance, PAYER_ETH - 6 ether + paid);
    }

    /// A merchant withdraws at most its own reserve, and always to itself.
    function testFuzz_withdrawRefunds(uint256 funded, uint256 taken, uint256 otherFunded) public {
        funded = _bound(funded, 1, PAYER_TOKENS);
        otherFunded = _bound(otherFunded, 1, PAYER_TOKENS);
        taken = _bound(taken, 1, 2 * PAYER_TOKENS);
        _fundRefunds(stranger, merchant, address(token), funded);
        address otherMerchant = makeAddr("otherMerchant");
        _fundRefunds(stranger, otherMerchant, address(token), otherFunded);
        vm.prank(merchant);
        if (taken > funded) vm.expectRevert(PaymentEscrow.InsufficientRefundReserve.selector);
        escrow.withdrawRefunds(address(token), taken);
        uint256 got = taken > funded ? 0 : taken;
        assertEq(token.balanceOf(merchant), got);
        assertEq(escrow.refundReserve(merchant, address(token)), funded - got);
        assertEq(escrow.refundReserve(otherMerchant, address(token)), otherFunded);
        assertEq(token.balanceOf(address(escrow)), funded + otherFunded - got);
    }

    // ------------------------------------------------------------ time

    /// Before the expiry only the operator can move the funds (capture); from the expiry on only
    /// the payer's reclaim (or a void) can, and capture is refused.
    function testFuzz_expiryWindow(uint64 ttl, uint64 warpBy, uint256 amount) public {
        ttl = uint64(_bound(ttl, 1, 3650 days));
        warpBy = uint64(_bound(warpBy, 0, 2 * 3650 days));
        amount = _bound(amount, 2, PAYER_ETH);
        uint64 exp = uint64(block.timestamp) + ttl;
        vm.prank(payer);
        bytes32 id = escrow.deposit{value: amount}(merchant, exp, "t");

        vm.warp(block.timestamp + warpBy);
        bool expired = block.timestamp >= exp;

        vm.prank(operator);
        if (expired) vm.expectRevert(PaymentEscrow.Expired.selector);
        escrow.capture(id, 1, 0);

        vm.prank(payer);
        if (!expired) vm.expectRevert(PaymentEscrow.NotExpired.selector);
        escrow.reclaim(id);

        if (expired) {
            assertEq(payer.balance, PAYER_ETH, "reclaimed everything");
            assertEq(merchant.balance, 0);
        } else {
            assertEq(payer.balance, PAYER_ETH - amount);
            assertEq(merchant.balance, 1);
        }
        assertEq(address(escrow).balance, expired ? 0 : amount - 1);
    }

    /// A role change can be executed from `eta` on and not a second earlier.
    function testFuzz_roleChangeDelay(uint8 roleSeed, uint64 wait, address next) public {
        vm.assume(next != address(0));
        PaymentEscrow.Role role = PaymentEscrow.Role(_bound(roleSeed, 0, 2));
        wait = uint64(_bound(wait, 0, 3 * CHANGE_DELAY));
        vm.prank(owner);
        escrow.proposeChange(role, next);
        uint64 eta = uint64(block.timestamp) + CHANGE_DELAY;
        vm.warp(block.timestamp + wait);
        if (block.timestamp < eta) {
            vm.expectRevert(abi.encodeWithSelector(PaymentEscrow.ChangeNotReady.selector, eta));
        }
        escrow.executeChange(role);
        address[3] memory original = [operator, feeRecipient, treasury];
        address[3] memory current = [escrow.operator(), escrow.feeRecipient(), escrow.treasury()];
        for (uint256 r; r < 3; r++) {
            bool changed = r == uint256(role) && block.timestamp >= eta;
            assertEq(current[r], changed ? next : original[r]);
        }
    }

    /// A deposit whose expiry is not in the future is refused, for ETH and tokens.
    function testFuzz_depositRejectsPastExpiry(uint64 age, uint256 amount) public {
        age = uint64(_bound(age, 0, block.timestamp));
        amount = _bound(amount, 1, 1e6);
        uint64 exp = uint64(block.timestamp) - age;
        vm.startPrank(payer);
        vm.expectRevert(PaymentEscrow.Expired.selector);
        escrow.deposit{value: amount}(merchant, exp, "old");
        vm.expectRevert(PaymentEscrow.Expired.selector);
        escrow.depositToken(merchant, address(token), amount, exp, "old");
        vm.stopPrank();
    }

    // ------------------------------------------------------------ liquidity

    /// Liquidity, deposits and refund reserves never mix: withdraw and settle can take at most what
    /// was funded, and withdraw pays the treasury.
    function testFuzz_liquiditySeparateFromDeposits(uint256 deposited, uint256 funded, uint256 settled, uint256 taken)
        public
    {
        deposited = _bound(deposited, 1, PAYER_ETH);
        funded = _bound(funded, 1, 1_000 ether);
        settled = _bound(settled, 1, funded);
        taken = _bound(taken, 1, funded);
        _depositEth(deposited, "d");
        _fundRefunds(merchant, merchant, ETH, 1 ether);
        vm.deal(operator, funded);
        vm.startPrank(operator);
        escrow.fund{value: funded}(ETH, funded);
        escrow.settle(keccak256("s"), merchant, ETH, settled, "ref");
        if (taken > funded - settled) vm.expectRevert(PaymentEscrow.InsufficientLiquidity.selector);
        escrow.withdraw(ETH, taken);
        vm.stopPrank();

        uint256 left = taken > funded - settled ? funded - settled : funded - settled - taken;
        assertEq(escrow.liquidity(ETH), left);
        assertEq(address(escrow).balance, deposited + left + 1 ether);
        assertEq(merchant.balance, settled);
        assertEq(treasury.balance, taken > funded - settled ? 0 : taken);
        assertEq(operator.balance, 0);
        assertEq(escrow.refundReserve(merchant, ETH), 1 ether);
    }
}
