// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {PaymentEscrow} from "../../src/PaymentEscrow.sol";

/// Rejects every ETH transfer (a merchant, payer or withdrawal target that cannot take ETH).
contract EthRejecter {
    error NoEthPlease();

    receive() external payable {
        revert NoEthPlease();
    }
}

/// A payer contract that, whenever it receives ETH from the escrow (reclaim, void or refund),
/// tries to re-enter the escrow to take the same remainder again. With `bubble` set it lets the
/// re-entry failure revert the payout; otherwise it swallows it and records what happened.
contract ReentrantPayer {
    PaymentEscrow public immutable escrow;
    bytes32 public target;
    bool public bubble;
    uint256 public attempts;
    uint256 public successes;
    bytes public lastError;

    constructor(PaymentEscrow escrow_) {
        escrow = escrow_;
    }

    function depositEth(address merchant, uint64 expiry, bytes32 salt) external payable returns (bytes32 id) {
        id = escrow.deposit{value: msg.value}(merchant, expiry, salt);
        target = id;
    }

    function setBubble(bool bubble_) external {
        bubble = bubble_;
    }

    function reclaim() external {
        escrow.reclaim(target);
    }

    receive() external payable {
        if (attempts >= 3) return;
        attempts++;
        (bool ok, bytes memory err) = address(escrow).call(abi.encodeCall(PaymentEscrow.reclaim, (target)));
        if (ok) successes++;
        lastError = err;
        if (!ok && bubble) {
            assembly {
                revert(add(err, 0x20), mload(err))
            }
        }
        // Also try the operator-only paths; they must fail as well.
        (ok,) = address(escrow).call(abi.encodeCall(PaymentEscrow.void, (target)));
        if (ok) successes++;
    }
}

/// A merchant contract that is also the payer of another (expired) payment. When paid (by a
/// capture or a withdrawal of its refund reserve) it tries to reclaim its own payment from inside
/// the payout, to capture again, and to withdraw from its refund reserve again.
contract ReentrantMerchant {
    PaymentEscrow public immutable escrow;
    bytes32 public ownPayment;
    bytes32 public capturedPayment;
    uint256 public attempts;
    uint256 public successes;
    bytes public lastError;

    constructor(PaymentEscrow escrow_) {
        escrow = escrow_;
    }

    function depositEth(address merchant, uint64 expiry, bytes32 salt) external payable returns (bytes32 id) {
        id = escrow.deposit{value: msg.value}(merchant, expiry, salt);
        ownPayment = id;
    }

    function setCapturedPayment(bytes32 id) external {
        capturedPayment = id;
    }

    function reclaim() external {
        escrow.reclaim(ownPayment);
    }

    function fundRefunds() external payable {
        escrow.fundRefunds{value: msg.value}(address(this), address(0), msg.value);
    }

    function withdrawRefunds(uint256 amount) external {
        escrow.withdrawRefunds(address(0), amount);
    }

    receive() external payable {
        if (attempts >= 3) return;
        attempts++;
        (bool ok, bytes memory err) = address(escrow).call(abi.encodeCall(PaymentEscrow.reclaim, (ownPayment)));
        if (ok) successes++;
        lastError = err;
        (ok,) = address(escrow).call(abi.encodeCall(PaymentEscrow.capture, (capturedPayment, 1, 0)));
        if (ok) successes++;
        (ok,) = address(escrow).call(abi.encodeCall(PaymentEscrow.withdrawRefunds, (address(0), 1)));
        if (ok) successes++;
    }
}
