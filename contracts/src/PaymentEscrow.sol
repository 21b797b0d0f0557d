// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title PaymentEscrow
/// @notice Relay's on-chain escrow: a payer deposits ETH or an ERC-20 against a payment id derived
/// from the payment terms; the operator (the relay) captures it to the merchant (minus a capped
/// fee), voids it, or refunds captured amounts out of the merchant's own refund reserve; after the
/// expiry the payer may reclaim whatever was not captured. Separately, the operator keeps a
/// liquidity pool per asset from which it settles cross-rail payments to merchants (each
/// settlement id once) and which it can only withdraw to the treasury.
///
/// Life cycle of a payment (`token == address(0)` means ETH):
///  - `deposit` / `depositToken` (payer, strictly before `expiry`) creates it, open.
///  - `capture(id, amount, fee)` (operator, strictly before `expiry`) moves `amount` of the
///    uncaptured remainder out: `amount - fee` to the merchant, `fee` to the fee recipient. The fee
///    is at most `maxFeeBps` basis points of `amount`, fixed at deployment, so a compromised
///    operator key cannot divert a payment to the fee recipient. Several partial captures are
///    allowed. Capturing after the expiry is refused (`Expired`) so that from `expiry` on the
///    payer's right to reclaim cannot be raced by a capture.
///  - `void(id)` (operator, any time while open) returns the uncaptured remainder to the payer.
///  - `reclaim(id)` (payer, once `block.timestamp >= expiry`, while open) does the same.
///  - `refund(id, amount)` (operator, any time, also after the payment is closed) pays the payer up
///    to what was captured in total, out of `refundReserve[merchant][token]` only. A refund is the
///    merchant's money going back: it never touches deposits, liquidity, other merchants'
///    reserves or the operator's own funds. With too little in the reserve it reverts.
///
/// `closed` is true once nothing is left to capture: after `void`, after `reclaim`, or when the
/// captures add up to the full amount. A closed payment accepts only `refund`. A payment id is
/// never reused, not even after it is closed (`PaymentExists`).
///
/// Refund reserves: anyone (the merchant, or the relay on its behalf) may add to a merchant's
/// reserve of an asset with `fundRefunds`; only the merchant itself takes it back, with
/// `withdrawRefunds`, to its own address. A merchant can therefore empty its reserve ahead of a
/// refund; the refund then reverts and has to be settled off-chain, but nobody else pays for it.
///
/// Powers:
///  - owner (two-step transferable, without delay): proposes and cancels role changes. It moves
///    no funds.
///  - operator: capture (fee capped), void, refund (only from the payment's merchant's reserve,
///    only to that payment's payer, at most what was captured), fund, withdraw (to the treasury
///    only), settle (from liquidity only).
///  - anyone: `executeChange` of a proposal whose delay has passed; `fundRefunds`.
///  - merchant: `withdrawRefunds` of its own reserve. Payer: deposit, reclaim.
/// The operator, fee recipient and treasury change only through `proposeChange`, then
/// `executeChange` at least `changeDelay` seconds later (`cancelChange` drops a proposal). The
/// delay gives payers, merchants and the relay time to see a change coming and react (reclaim,
/// withdraw reserves, cancel it) before a new operator or payout address can act.
///
/// Accounting guarantee, per asset: this contract's balance is at least the sum over open payments
/// of `amount - captured`, plus `liquidity[asset]`, plus the sum over merchants of
/// `refundReserve[merchant][asset]`. Every outflow is matched by a decrease of one of those terms
/// (a refund decreases the reserve of the payment's merchant by exactly what it pays out), and
/// inflows of ERC-20s are checked by balance difference, so fee-on-transfer tokens are refused.
contract PaymentEscrow is Ownable2Step, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// The roles that change through the timelock (`proposeChange` / `executeChange`).
    enum Role {
        Operator,
        FeeRecipient,
        Treasury
    }

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

    /// A proposed role change (one slot); `proposed == address(0)` means none is pending.
    struct PendingChange {
        address proposed;
        uint64 eta;
    }

    /// Highest fee per capture, in basis points of the captured amount (10_000 = 100 %). Fixed at
    /// deployment so that no key can raise it later.
    uint16 public immutable maxFeeBps;
    /// Seconds between `proposeChange` and the earliest `executeChange` of a role change.
    uint64 public immutable changeDelay;

    /// The relay's account, allowed to capture, void, refund, fund, withdraw and settle.
    address public operator;
    /// Receives the fee part of every capture.
    address public feeRecipient;
    /// The only destination of `withdraw`, so that the operator key alone cannot take liquidity
    /// to an address of its choosing.
    address public treasury;

    mapping(bytes32 id => Payment) private _payments;
    mapping(Role role => PendingChange) private _pendingChanges;
    /// Operator liquidity per asset (`address(0)` = ETH), usable by `settle` and `withdraw` only.
    mapping(address token => uint256) public liquidity;
    /// Settlement ids already paid by `settle`.
    mapping(bytes32 settlementId => bool) public settlementUsed;
    /// Per merchant and asset, what `refund` may pay to that merchant's payers; only the merchant
    /// withdraws it.
    mapping(address merchant => mapping(address token => uint256)) public refundReserve;

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
    event RefundReserveFunded(address indexed merchant, address indexed token, address from, uint256 amount);
    event RefundReserveWithdrawn(address indexed merchant, address indexed token, uint256 amount);
    event ChangeProposed(Role indexed role, address current, address proposed, uint64 eta);
    event ChangeExecuted(Role indexed role, address previous, address current);
    event ChangeCanceled(Role indexed role, address proposed);

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
    /// Fee above `maxFeeBps` of the captured amount (which includes a fee above the amount).
    error FeeTooLarge();
    /// Constructor: a fee cap above 100 %.
    error FeeCapTooHigh();
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
    /// The merchant's refund reserve of the asset is below the requested amount.
    error InsufficientRefundReserve();
    /// The settlement id was already used.
    error SettlementAlreadyUsed();
    /// An ETH payout was rejected by the recipient.
    error TransferFailed();
    /// No change of this role is pending.
    error NoPendingChange();
    /// The pending change may be executed only from `eta` on.
    error ChangeNotReady(uint64 eta);

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotOperator();
        _;
    }

    /// `maxFeeBps_` and `changeDelay_` are fixed for the life of the contract (a `changeDelay_`
    /// so large that `block.timestamp + changeDelay_` overflows uint64 would make every
    /// `proposeChange` revert). A zero owner is refused by `Ownable` (`OwnableInvalidOwner`).
    constructor(
        address owner_,
        address operator_,
        address feeRecipient_,
        address treasury_,
        uint16 maxFeeBps_,
        uint64 changeDelay_
    ) Ownable(owner_) {
        if (operator_ == address(0) || feeRecipient_ == address(0) || treasury_ == address(0)) {
            revert ZeroAddress();
        }
        if (maxFeeBps_ > 10_000) revert FeeCapTooHigh();
        maxFeeBps = maxFeeBps_;
        changeDelay = changeDelay_;
        operator = operator_;
        feeRecipient = feeRecipient_;
        treasury = treasury_;
        emit ChangeExecuted(Role.Operator, address(0), operator_);
        emit ChangeExecuted(Role.FeeRecipient, address(0), feeRecipient_);
        emit ChangeExecuted(Role.Treasury, address(0), treasury_);
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

    /// The pending change of `role`: the proposed address and the earliest time it can be
    /// executed; both zero when none is pending.
    function pendingChange(Role role) external view returns (address proposed, uint64 eta) {
        PendingChange storage c = _pendingChanges[role];
        return (c.proposed, c.eta);
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
    /// fee recipient. The fee may be at most `maxFeeBps` basis points of `amount`, that is
    /// `fee * 10_000 <= amount * maxFeeBps` (so never more than `amount`). Closes the payment when
    /// nothing remains.
    function capture(bytes32 id, uint256 amount, uint256 fee) external onlyOperator nonReentrant {
        Payment storage p = _known(id);
        if (p.closed) revert PaymentClosed();
        if (block.timestamp >= p.expiry) revert Expired();
        if (amount == 0) revert ZeroAmount();
        if (fee > _feeCap(amount)) revert FeeTooLarge();
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

    /// Pay `amount` back to the payer out of what was captured, taken from the refund reserve of
    /// the payment's merchant in the payment's asset. Not payable and pulls nothing: the operator's
    /// own funds, liquidity, deposits and other merchants' reserves are never used for a refund.
    function refund(bytes32 id, uint256 amount) external onlyOperator nonReentrant {
        Payment storage p = _known(id);
        if (amount == 0) revert ZeroAmount();
        uint256 refunded = p.refunded + amount;
        if (refunded > p.captured) revert AmountTooLarge();
        address token = p.token;
        uint256 reserve = refundReserve[p.merchant][token];
        if (amount > reserve) revert InsufficientRefundReserve();
        p.refunded = refunded;
        refundReserve[p.merchant][token] = reserve - amount;
        emit PaymentRefunded(id, amount);
        _send(token, p.payer, amount);
    }

    // ---------------------------------------------------------------- refund reserves

    /// Add `amount` to `merchant`'s refund reserve of `token` (ETH: `msg.value == amount`; token:
    /// pulled from the sender). Anyone may fund it; only the merchant can take it back.
    function fundRefunds(address merchant, address token, uint256 amount) external payable nonReentrant {
        if (merchant == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        _checkValue(token, amount);
        refundReserve[merchant][token] += amount;
        emit RefundReserveFunded(merchant, token, msg.sender, amount);
        if (token != address(0)) _pullToken(token, msg.sender, amount);
    }

    /// The merchant (the sender) takes `amount` of its own refund reserve of `token` back.
    function withdrawRefunds(address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 reserve = refundReserve[msg.sender][token];
        if (amount > reserve) revert InsufficientRefundReserve();
        refundReserve[msg.sender][token] = reserve - amount;
        emit RefundReserveWithdrawn(msg.sender, token, amount);
        _send(token, msg.sender, amount);
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

    /// Take operator liquidity out, to the treasury only (a stolen operator key cannot send it
    /// elsewhere; moving the treasury takes the owner and `changeDelay`). Never touches deposits
    /// or refund reserves.
    function withdraw(address token, uint256 amount) external onlyOperator nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 available = liquidity[token];
        if (amount > available) revert InsufficientLiquidity();
        liquidity[token] = available - amount;
        address to = treasury;
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

    // ---------------------------------------------------------------- role changes (timelocked)

    /// Propose `proposed` as the new holder of `role`, executable from `block.timestamp +
    /// changeDelay` on. Replaces an earlier pending proposal of the same role (its delay restarts).
    function proposeChange(Role role, address proposed) external onlyOwner {
        if (proposed == address(0)) revert ZeroAddress();
        uint64 eta = uint64(block.timestamp) + changeDelay;
        _pendingChanges[role] = PendingChange(proposed, eta);
        emit ChangeProposed(role, _roleHolder(role), proposed, eta);
    }

    /// Apply the pending change of `role` once its delay has passed. Anyone may call it, so that a
    /// change the owner proposed does not depend on the owner's key being available later.
    function executeChange(Role role) external {
        PendingChange memory c = _pendingChanges[role];
        if (c.proposed == address(0)) revert NoPendingChange();
        if (block.timestamp < c.eta) revert ChangeNotReady(c.eta);
        delete _pendingChanges[role];
        address previous = _roleHolder(role);
        if (role == Role.Operator) operator = c.proposed;
        else if (role == Role.FeeRecipient) feeRecipient = c.proposed;
        else treasury = c.proposed;
        emit ChangeExecuted(role, previous, c.proposed);
    }

    /// Drop the pending change of `role`.
    function cancelChange(Role role) external onlyOwner {
        address proposed = _pendingChanges[role].proposed;
        if (proposed == address(0)) revert NoPendingChange();
        delete _pendingChanges[role];
        emit ChangeCanceled(role, proposed);
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

    function _roleHolder(Role role) private view returns (address) {
        if (role == Role.Operator) return operator;
        if (role == Role.FeeRecipient) return feeRecipient;
        return treasury;
    }

    /// The largest fee allowed on a capture of `amount`: floor(amount * maxFeeBps / 10_000),
    /// computed as `q * maxFeeBps + r * maxFeeBps / 10_000` with `amount = q * 10_000 + r`, so it
    /// cannot overflow for any amount. `fee > _feeCap(amount)` holds exactly when
    /// `fee * 10_000 > amount * maxFeeBps`.
    function _feeCap(uint256 amount) private view returns (uint256) {
        uint256 bps = maxFeeBps;
        // Dividing first is the point: it is exact here (the remainder is handled separately).
        // forge-lint: disable-next-line(divide-before-multiply)
        return (amount / 10_000) * bps + (amount % 10_000) * bps / 10_000;
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
