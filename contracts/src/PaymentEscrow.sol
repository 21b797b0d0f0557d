// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title PaymentEscrow
/// @notice Relay's on-chain escrow: a payer deposits ETH or an ERC-20 against a payment id derived
/// from the payment terms; the operator (the relay) captures it to the merchant (minus a fee),
/// voids it, or refunds captured amounts; after the expiry the payer may reclaim whatever was not
/// captured. Separately, the operator keeps a liquidity pool per asset from which it settles
/// cross-rail payments to merchants (each settlement id once).
///
/// Life cycle of a payment (`token == address(0)` means ETH):
///  - `deposit` / `depositToken` (payer, strictly before `expiry`) creates it, open.
///  - `capture(id, amount, fee)` (operator, strictly before `expiry`) moves `amount` of the
///    uncaptured remainder out: `amount - fee` to the merchant, `fee` to the fee recipient. Several
///    partial captures are allowed. Capturing after the expiry is refused (`Expired`) so that from
///    `expiry` on the payer's right to reclaim cannot be raced by a capture.
///  - `void(id)` (operator, any time while open) returns the uncaptured remainder to the payer.
///  - `reclaim(id)` (payer, once `block.timestamp >= expiry`, while open) does the same.
///  - `refund(id, amount)` (operator, any time, also after the payment is closed) pays the payer up
///    to what was captured in total; the operator funds it in the same call, so refunds never touch
///    deposits or liquidity.
///
/// `closed` is true once nothing is left to capture: after `void`, after `reclaim`, or when the
/// captures add up to the full amount. A closed payment accepts only `refund`. A payment id is
/// never reused, not even after it is closed (`PaymentExists`).
///
/// Accounting guarantee, per asset: this contract's balance is at least the sum over open payments
/// of `amount - captured` plus `liquidity[asset]`. Every outflow is matched by a decrease of one of
/// those terms (or, for refunds, by an inflow of the same size in the same call), and inflows of
/// ERC-20s are checked by balance difference, so fee-on-transfer tokens are refused.
contract PaymentEscrow is Ownable2Step, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// Storage layout of a payment (packed: payer+expiry, merchant+closed share slots).
    struct Payment {
        address payer;
        uint64 expiry;
        address merchant;
        bool closed;
        address token;
        uint256 amount;
        uint256 captured;
        uint256 refunded;
    }

    /// The relay's account, allowed to capture, void, refund, fund, withdraw and settle.
    address public operator;
    /// Receives the fee part of every capture.
    address public feeRecipient;

    mapping(bytes32 id => Payment) private _payments;
    /// Operator liquidity per asset (`address(0)` = ETH), usable by `settle` and `withdraw` only.
    mapping(address token => uint256) public liquidity;
    /// Settlement ids already paid by `settle`.
    mapping(bytes32 settlementId => bool) public settlementUsed;

    event PaymentDeposited(
        bytes32 indexed paymentId,
        address indexed payer,
        address indexed merchant,
        address token,
        uint256 amount,
        uint64 expiry,
        bytes32 salt
    );
    event PaymentCaptured(bytes32 indexed paymentId, uint256 amount, uint256 fee);
    event PaymentVoided(bytes32 indexed paymentId, uint256 amount);
    event PaymentRefunded(bytes32 indexed paymentId, uint256 amount);
    event PaymentReclaimed(bytes32 indexed paymentId, uint256 amount);
    event LiquidityFunded(address indexed token, uint256 amount);
    event LiquidityWithdrawn(address indexed token, address to, uint256 amount);
    event Settled(
        bytes32 indexed settlementId, address indexed merchant, address token, uint256 amount, string sourceRef
    );
    event OperatorChanged(address previous, address current);
    event FeeRecipientChanged(address previous, address current);

    /// Caller is not the operator.
    error NotOperator();
    /// Caller is not the payer of the payment.
    error NotPayer();
    /// A payment with this id was already deposited (ids are never reused).
    error PaymentExists();
    /// No payment with this id.
    error UnknownPayment();
    /// The payment is voided, reclaimed or fully captured.
    error PaymentClosed();
    /// Capture beyond the uncaptured remainder, or refund beyond what was captured and not refunded.
    error AmountTooLarge();
    /// Fee larger than the captured amount.
    error FeeTooLarge();
    /// Amount is zero.
    error ZeroAmount();
    /// A required address is zero.
    error ZeroAddress();
    /// Reclaim before the expiry.
    error NotExpired();
    /// Deposit or capture at or after the expiry.
    error Expired();
    /// msg.value does not match the amount (ETH), or is non-zero for a token operation.
    error WrongValue();
    /// The token moved fewer units into this contract than requested (fee-on-transfer token).
    error TokenDeliveredLess(uint256 expected, uint256 received);
    /// Liquidity of the asset is below the requested amount.
    error InsufficientLiquidity();
    /// The settlement id was already used.
    error SettlementAlreadyUsed();
    /// An ETH payout was rejected by the recipient.
    error TransferFailed();

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotOperator();
        _;
    }

    constructor(address owner_, address operator_, address feeRecipient_) Ownable(owner_) {
        if (operator_ == address(0) || feeRecipient_ == address(0)) revert ZeroAddress();
        operator = operator_;
        feeRecipient = feeRecipient_;
        emit OperatorChanged(address(0), operator_);
        emit FeeRecipientChanged(address(0), feeRecipient_);
    }

    // ---------------------------------------------------------------- views

    /// The id of a payment with these terms on this chain and this escrow. The payer is not part
    /// of it: whoever deposits first under these terms is the payer.
    function paymentId(address merchant, address token, uint256 amount, uint64 expiry, bytes32 salt)
        public
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(block.chainid, address(this), merchant, token, amount, expiry, salt));
    }

    /// The stored state of a payment; all zero for an unknown id (`payer == address(0)`).
    function payments(bytes32 id)
        external
        view
        returns (
            address payer,
            address merchant,
            address token,
            uint256 amount,
            uint64 expiry,
            uint256 captured,
            uint256 refunded,
            bool closed
        )
    {
        Payment storage p = _payments[id];
        return (p.payer, p.merchant, p.token, p.amount, p.expiry, p.captured, p.refunded, p.closed);
    }

    // ---------------------------------------------------------------- payer

    /// Deposit `msg.value` ETH for `merchant`, reclaimable by the sender from `expiry` on.
    function deposit(address merchant, uint64 expiry, bytes32 salt) external payable nonReentrant returns (bytes32 id) {
        id = _open(merchant, address(0), msg.value, expiry, salt);
    }

    /// Deposit `amount` of `token` (pulled from the sender, who must have approved it).
    function depositToken(address merchant, address token, uint256 amount, uint64 expiry, bytes32 salt)
        external
        nonReentrant
        returns (bytes32 id)
    {
        if (token == address(0)) revert ZeroAddress();
        id = _open(merchant, token, amount, expiry, salt);
        _pullToken(token, msg.sender, amount);
    }

    /// Payer takes back the uncaptured remainder once the payment has expired.
    function reclaim(bytes32 id) external nonReentrant {
        Payment storage p = _known(id);
        if (msg.sender != p.payer) revert NotPayer();
        if (block.timestamp < p.expiry) revert NotExpired();
        if (p.closed) revert PaymentClosed();
        uint256 remaining = p.amount - p.captured;
        p.closed = true;
        emit PaymentReclaimed(id, remaining);
        _send(p.token, p.payer, remaining);
    }

    // ---------------------------------------------------------------- operator: payments

    /// Capture `amount` of the uncaptured remainder: `amount - fee` to the merchant, `fee` to the
    /// fee recipient. Closes the payment when nothing remains.
    function capture(bytes32 id, uint256 amount, uint256 fee) external onlyOperator nonReentrant {
        Payment storage p = _known(id);
        if (p.closed) revert PaymentClosed();
        if (block.timestamp >= p.expiry) revert Expired();
        if (amount == 0) revert ZeroAmount();
        if (fee > amount) revert FeeTooLarge();
        uint256 captured = p.captured + amount;
        if (captured > p.amount) revert AmountTooLarge();
        p.captured = captured;
        if (captured == p.amount) p.closed = true;
        emit PaymentCaptured(id, amount, fee);
        _send(p.token, p.merchant, amount - fee);
        _send(p.token, feeRecipient, fee);
    }

    /// Return the uncaptured remainder to the payer and close the payment.
    function void(bytes32 id) external onlyOperator nonReentrant {
        Payment storage p = _known(id);
        if (p.closed) revert PaymentClosed();
        uint256 remaining = p.amount - p.captured;
        p.closed = true;
        emit PaymentVoided(id, remaining);
        _send(p.token, p.payer, remaining);
    }

    /// Pay `amount` back to the payer out of what was captured, funded by the operator in this call
    /// (ETH: `msg.value == amount`; token: pulled from the operator).
    function refund(bytes32 id, uint256 amount) external payable onlyOperator nonReentrant {
        Payment storage p = _known(id);
        if (amount == 0) revert ZeroAmount();
        uint256 refunded = p.refunded + amount;
        if (refunded > p.captured) revert AmountTooLarge();
        address token = p.token;
        _checkValue(token, amount);
        p.refunded = refunded;
        emit PaymentRefunded(id, amount);
        if (token != address(0)) _pullToken(token, msg.sender, amount);
        _send(token, p.payer, amount);
    }

    // ---------------------------------------------------------------- operator: liquidity

    /// Add operator liquidity (ETH: `msg.value == amount`; token: pulled from the operator).
    function fund(address token, uint256 amount) external payable onlyOperator nonReentrant {
        if (amount == 0) revert ZeroAmount();
        _checkValue(token, amount);
        liquidity[token] += amount;
        emit LiquidityFunded(token, amount);
        if (token != address(0)) _pullToken(token, msg.sender, amount);
    }

    /// Take operator liquidity out. Never touches deposits.
    function withdraw(address token, uint256 amount, address to) external onlyOperator nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        uint256 available = liquidity[token];
        if (amount > available) revert InsufficientLiquidity();
        liquidity[token] = available - amount;
        emit LiquidityWithdrawn(token, to, amount);
        _send(token, to, amount);
    }

    /// Pay `merchant` from liquidity for a payment made on another rail (`sourceRef` names it).
    /// Each `settlementId` is paid at most once.
    function settle(bytes32 settlementId, address merchant, address token, uint256 amount, string calldata sourceRef)
        external
        onlyOperator
        nonReentrant
    {
        if (settlementUsed[settlementId]) revert SettlementAlreadyUsed();
        if (merchant == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        uint256 available = liquidity[token];
        if (amount > available) revert InsufficientLiquidity();
        settlementUsed[settlementId] = true;
        liquidity[token] = available - amount;
        emit Settled(settlementId, merchant, token, amount, sourceRef);
        _send(token, merchant, amount);
    }

    // ---------------------------------------------------------------- owner

    function setOperator(address operator_) external onlyOwner {
        if (operator_ == address(0)) revert ZeroAddress();
        emit OperatorChanged(operator, operator_);
        operator = operator_;
    }

    function setFeeRecipient(address feeRecipient_) external onlyOwner {
        if (feeRecipient_ == address(0)) revert ZeroAddress();
        emit FeeRecipientChanged(feeRecipient, feeRecipient_);
        feeRecipient = feeRecipient_;
    }

    // ---------------------------------------------------------------- internals

    /// Checks and records a new payment; the caller moves the funds in.
    function _open(address merchant, address token, uint256 amount, uint64 expiry, bytes32 salt)
        private
        returns (bytes32 id)
    {
        if (merchant == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (expiry <= block.timestamp) revert Expired();
        id = paymentId(merchant, token, amount, expiry, salt);
        Payment storage p = _payments[id];
        if (p.payer != address(0)) revert PaymentExists();
        p.payer = msg.sender;
        p.expiry = expiry;
        p.merchant = merchant;
        p.token = token;
        p.amount = amount;
        emit PaymentDeposited(id, msg.sender, merchant, token, amount, expiry, salt);
    }

    function _known(bytes32 id) private view returns (Payment storage p) {
        p = _payments[id];
        if (p.payer == address(0)) revert UnknownPayment();
    }

    /// ETH operations must carry exactly `amount`; token operations must carry no ETH.
    function _checkValue(address token, uint256 amount) private view {
        if (msg.value != (token == address(0) ? amount : 0)) revert WrongValue();
    }

    /// Pull `amount` of `token` from `from` and check that all of it arrived.
    function _pullToken(address token, address from, uint256 amount) private {
        IERC20 t = IERC20(token);
        uint256 before = t.balanceOf(address(this));
        t.safeTransferFrom(from, address(this), amount);
        uint256 afterwards = t.balanceOf(address(this));
        uint256 received = afterwards > before ? afterwards - before : 0;
        if (received < amount) revert TokenDeliveredLess(amount, received);
    }

    /// Pay out ETH (`token == address(0)`) or a token; zero amounts are skipped.
    function _send(address token, address to, uint256 amount) private {
        if (amount == 0) return;
        if (token == address(0)) {
            (bool ok,) = payable(to).call{value: amount}("");
            if (!ok) revert TransferFailed();
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }
}
